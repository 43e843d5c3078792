"""Discretisation of continuous features into a few integer states, for mutual information.

Peng's mRMR works on discrete variables. For continuous data the mRMR authors discretise every
feature into three states at ``mean ± k·σ`` (Peng, Long & Ding, TPAMI 27(8), 2005, Sec. 4; the
mRMR FAQ, http://home.penglab.com/proj/mRMR/FAQ_mrmr.htm, Q5.x, and the ``-t`` option of Peng's
``mrmr`` C program: "mean+t*std and mean-t*std as the thresholds to discretize data into 3
states", t = 1 or 0.5 typical). pymrmr does no discretisation at all: its README asks for data
"discretised as defined in the original paper". :func:`fit_thresholds` implements that rule
(``method="sigma"``) and an equal-frequency alternative (``method="quantile"``).

Thresholds are fitted on the training rows only and stored, so test rows are coded with the
training thresholds (no information from test rows leaks into the selection).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from cytocompare_classical._validation import check_finite

__all__ = ["fit_thresholds", "apply_thresholds", "check_finite"]

#: rows per block when coding; bounds the float64 temporaries to ~block × p × 8 bytes
_BLOCK_ROWS = 8192
#: rows per block of the float64 column sums (2,048 x 6,120 x 8 bytes: 100 MB)
_SUM_BLOCK_ROWS = 2048


def fit_thresholds(
    X: np.ndarray,
    method: Literal["sigma", "quantile"] = "sigma",
    sigma_k: float = 1.0,
    n_bins: int = 3,
) -> np.ndarray:
    """Per-feature thresholds, fitted on the rows given (pass the training rows only).

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        Continuous, finite features.
    method : {"sigma", "quantile"}
        ``"sigma"``: Peng's three states, thresholds ``mean - sigma_k·sd`` and
        ``mean + sigma_k·sd`` (sd with ``ddof=1``, as the z-scoring in Peng's C program).
        ``"quantile"``: ``n_bins`` equal-frequency bins; thresholds are the ``j / n_bins``
        quantiles, ``j = 1 .. n_bins - 1``.
    sigma_k : float
        Width of the middle state in standard deviations (``"sigma"`` only); Peng used 1 (and
        0.5 on some data sets).
    n_bins : int
        Number of states for ``"quantile"`` (2 to 255).

    Returns
    -------
    thresholds : float64 array of shape (n_features, n_thresholds)
        Sorted along axis 1. Two columns for ``"sigma"``, ``n_bins - 1`` for ``"quantile"``.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] < 1:
        raise ValueError("cannot fit discretisation thresholds on 0 rows")
    check_finite(X)
    if method == "sigma":
        if not (np.isfinite(sigma_k) and sigma_k >= 0):
            raise ValueError(f"sigma_k must be a finite number >= 0, got {sigma_k!r}")
        mean, sd = _mean_sd(X)
        return np.stack([mean - sigma_k * sd, mean + sigma_k * sd], axis=1)
    if method == "quantile":
        if not (isinstance(n_bins, (int, np.integer)) and 2 <= n_bins <= 255):
            raise ValueError(f"n_bins must be an integer in [2, 255] (uint8 codes), got {n_bins!r}")
        qs = np.arange(1, n_bins) / n_bins
        return np.ascontiguousarray(np.quantile(X, qs, axis=0).T.astype(np.float64))
    raise ValueError(f"unknown discretisation method {method!r}; use 'sigma' or 'quantile'")


def _column_sum(X: np.ndarray, transform=None) -> np.ndarray:
    """float64 column sums of ``transform(X as float64)``, row block by row block.

    The sum runs over the rows in order, each block's reduction starting from the running total,
    which is exactly the order of numpy's own axis-0 reduction: the result is bit-identical to
    ``transform(X.astype(float64)).sum(axis=0)`` without a float64 copy of ``X``."""
    total: np.ndarray | None = None
    for start in range(0, X.shape[0], _SUM_BLOCK_ROWS):
        blk = X[start:start + _SUM_BLOCK_ROWS]
        # a copy when transformed: ``transform`` works in place, and a float64 X's block is a view
        blk = np.asarray(blk, dtype=np.float64) if transform is None else transform(np.array(blk, dtype=np.float64))
        stacked = blk if total is None else np.concatenate([total[None], blk])
        total = np.add.reduce(stacked, axis=0)
    assert total is not None
    return total


def _mean_sd(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and sample sd (``ddof=1``), both accumulated in float64, equal bit for bit to
    ``X.mean(axis=0, dtype=float64)`` and ``X.std(axis=0, dtype=float64, ddof=1)``.

    float64 accumulation because float32 sums over 10^5 rows lose digits that move thresholds;
    blocked because numpy's ``std`` makes a float64 copy of the whole of ``X`` (5.9 GB for the
    120,000 x 6,120 training rows of the paper's 70/30 split)."""
    n = X.shape[0]
    mean = _column_sum(X) / n
    if n < 2:
        return mean, np.zeros(X.shape[1])

    def squared_deviation(blk: np.ndarray) -> np.ndarray:
        blk -= mean
        return np.multiply(blk, blk, out=blk)

    return mean, np.sqrt(_column_sum(X, squared_deviation) / (n - 1))


def apply_thresholds(
    X: np.ndarray,
    thresholds: np.ndarray,
    method: Literal["sigma", "quantile"] = "sigma",
    feature_major: bool = False,
) -> np.ndarray:
    """Code ``X`` into uint8 states with thresholds from :func:`fit_thresholds`.

    ``"sigma"`` follows Peng's rule exactly: state 0 if ``x < lo``, 2 if ``x > hi``, else 1 (a
    value equal to a threshold stays in the middle state). ``"quantile"`` gives the number of
    thresholds ``<= x`` (0 .. n_bins-1), as ``np.searchsorted(..., side="right")``.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    thresholds : array of shape (n_features, n_thresholds)
    method : {"sigma", "quantile"}
    feature_major : bool
        If True return shape (n_features, n_samples) C-contiguous, i.e. each feature's codes
        contiguous, which is the layout the mRMR kernels stream over.

    Returns
    -------
    codes : uint8 array
    """
    X = np.asarray(X)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if X.ndim != 2 or thresholds.ndim != 2 or thresholds.shape[0] != X.shape[1]:
        raise ValueError(
            f"X has shape {X.shape} but thresholds are for {thresholds.shape[0]} features"
        )
    check_finite(X)
    n, p = X.shape
    out = np.empty((p, n) if feature_major else (n, p), dtype=np.uint8)
    for start in range(0, n, _BLOCK_ROWS):
        blk = np.asarray(X[start:start + _BLOCK_ROWS], dtype=np.float64)
        if method == "sigma":
            codes = (blk >= thresholds[:, 0]).astype(np.uint8)
            codes += blk > thresholds[:, 1]
        elif method == "quantile":
            codes = np.zeros(blk.shape, dtype=np.uint8)
            for j in range(thresholds.shape[1]):
                codes += blk >= thresholds[:, j]
        else:
            raise ValueError(f"unknown discretisation method {method!r}; use 'sigma' or 'quantile'")
        if feature_major:
            out[:, start:start + blk.shape[0]] = codes.T
        else:
            out[start:start + blk.shape[0]] = codes
    return out
