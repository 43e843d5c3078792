"""Dataset-level alignment of an external set's handcrafted features to the training set's.

Another lab's stain, background and optics shift every handcrafted feature: on the Matek → PBC
transfer the standardised external cells lie ~5 training sd from the training cells on average,
where an RBF SVM's kernel to every support vector is ~0, so its decision is its intercepts alone
and it answers one class (NIF, "not identifiable") for every cell. Aligning each feature's mean
and sd over the whole external set to the training set's (the diagonal form of CORAL, Sun et al.
2016) removes the shift a lab puts on all its cells alike.

It is transductive and dataset-level: one map per feature from the statistics of the whole
external set, the same for every cell. It assumes that the external set's class mix does not
differ so much that it moves the means by itself, which is why it is an option and the run log
names it; images and the training set are never changed.
"""

from __future__ import annotations

import numpy as np

#: the values of ``test_data.feature_alignment``
ALIGNMENTS = ("none", "standardize")


def align_to_training(test: np.ndarray, train: np.ndarray) -> np.ndarray:
    """``(test - mean_test) / sd_test * sd_train + mean_train`` per feature (column), float32.

    Statistics ignore NaN (cells whose features failed); a feature constant on the external set
    is set to the training mean, one constant on the training set keeps that constant.
    """
    test = np.asarray(test, dtype=np.float64)
    if test.ndim != 2 or np.ndim(train) != 2 or test.shape[1] != np.shape(train)[1]:
        raise ValueError(f"feature matrices of shapes {np.shape(test)} and {np.shape(train)}: need the same columns")
    mu_train, sd_train = _column_stats(train)
    mu_test, sd_test = _column_stats(test)
    safe_sd = np.where(sd_test > 0, sd_test, 1.0)
    out = (test - mu_test) / safe_sd * sd_train + mu_train
    return out.astype(np.float32)


def _column_stats(x: np.ndarray, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Column means and sds ignoring NaN, read in row blocks so that a memmap of a paper-size
    training set is never loaded whole as float64."""
    n_cols = np.shape(x)[1]
    total, total_sq, count = np.zeros(n_cols), np.zeros(n_cols), np.zeros(n_cols)
    for start in range(0, len(x), block):
        b = np.asarray(x[start:start + block], dtype=np.float64)
        ok = np.isfinite(b)
        b = np.where(ok, b, 0.0)
        total += b.sum(axis=0)
        total_sq += (b * b).sum(axis=0)
        count += ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        var = np.where(count > 0, total_sq / np.maximum(count, 1) - mean ** 2, 0.0)
    return mean, np.sqrt(np.maximum(var, 0.0))
