"""Columns of a training feature matrix that carry information: not constant, not an exact copy.

Of the 6,120 handcrafted features, some are constant on real cells (e.g. a texture family at a
distance the cell never reaches) and some are exact duplicates of another column (the same
quantity reached through two families). They add nothing but cost to selection and make the
feature count look larger than the information it stands for. :func:`informative_columns` is
fit on the training rows only (it is called inside a selector's ``fit``), so the test fold never
decides which columns survive.
"""

from __future__ import annotations

import numpy as np

__all__ = ["informative_columns"]


def informative_columns(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which columns of ``X`` (n_samples, n_features) to keep, and what each column is.

    Returns
    -------
    kept : ndarray of int
        Increasing indices of the columns that are not constant over the rows and are the first
        of their group of exactly equal columns.
    representative : ndarray of int, one per column
        The kept column equal to this one (itself when kept), or -1 for a constant column.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D feature matrix, got shape {X.shape}")
    p = X.shape[1]
    representative = np.full(p, -1, dtype=np.int64)
    if X.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), representative
    constant = np.all(X == X[:1], axis=0)
    # exact equality of whole columns: group by the bytes of each column (NaN-safe, -0.0 != 0.0
    # bytewise, which only keeps a column that a value-wise test would drop)
    columns = np.ascontiguousarray(X.T)
    first_of: dict[bytes, int] = {}
    for j in np.flatnonzero(~constant):
        representative[j] = first_of.setdefault(columns[j].tobytes(), int(j))
    kept = np.flatnonzero(representative == np.arange(p))
    return kept, representative
