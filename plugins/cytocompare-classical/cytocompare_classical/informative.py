"""Columns of a training feature matrix that carry information: not constant, not a copy.

Of the 6,120 handcrafted features, some are constant on real cells (e.g. a texture family at a
distance the cell never reaches) and some are exact duplicates of another column (the same
quantity reached through two families). They add nothing but cost to selection and make the
feature count look larger than the information it stands for. :func:`informative_columns` is
fit on the training rows only (it is called inside a selector's ``fit``), so the test fold never
decides which columns survive.

A stricter, optional test (:func:`clean_columns`): a near-copy of an earlier column
(``max_correlation``, the absolute Pearson correlation on the training rows). On real cells many
features are near-copies (e.g. the blue channel's and HSV value's histograms of a bluish
cytoplasm): their discretised codes are equal or nearly so, and mRMR's averaged redundancy term
does not stop it picking both, so they take slots of the K picks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["informative_columns", "clean_columns", "CleanColumns", "REASONS"]

#: why :func:`clean_columns` keeps or drops a column (the values of ``CleanColumns.reason``)
REASONS = ("kept", "constant", "duplicate", "near-copy")

#: columns of the correlation matrix computed at a time (bounds memory: block × n_features floats)
_BLOCK = 512


class CleanColumns(NamedTuple):
    """What :func:`clean_columns` decided for each column of a training matrix."""

    #: increasing indices of the columns kept
    kept: np.ndarray
    #: per column: the kept column standing for it (itself when kept; for an exact duplicate or a
    #: near-copy the kept column it copies), or -1 for a constant column
    representative: np.ndarray
    #: per column: one of :data:`REASONS`
    reason: np.ndarray


def _near_copies(X: np.ndarray, cols: np.ndarray, max_correlation: float) -> dict[int, int]:
    """Greedy in column order over ``cols``: a column whose |Pearson r| with an earlier *kept*
    column exceeds ``max_correlation`` is dropped. Returns {dropped column: the first (lowest)
    kept column it copies}. ``cols`` must be non-constant."""
    if cols.size < 2:
        return {}
    Z = np.asarray(X[:, cols], dtype=np.float64)
    Z = Z - Z.mean(axis=0)
    norm = np.sqrt(np.einsum("ij,ij->j", Z, Z))
    Z /= norm
    # pairs (a, b), a < b (positions in cols), with |r| > max_correlation
    partners: dict[int, list[int]] = {}
    m = cols.size
    for start in range(0, m, _BLOCK):
        stop = min(start + _BLOCK, m)
        R = np.abs(Z[:, start:stop].T @ Z[:, :stop])  # rows: b in block, columns: a < stop
        R[np.arange(stop - start)[:, None] <= np.arange(stop)[None, :] - start] = 0.0  # keep a < b
        bs, as_ = np.nonzero(R > max_correlation)
        for b, a in zip(bs + start, as_):
            partners.setdefault(int(b), []).append(int(a))
    kept = np.ones(m, dtype=bool)
    copies: dict[int, int] = {}
    for b in sorted(partners):
        earlier = sorted(a for a in partners[b] if kept[a])
        if earlier:
            kept[b] = False
            copies[int(cols[b])] = int(cols[earlier[0]])
    return copies


def clean_columns(X: np.ndarray, max_correlation: float | None = None) -> CleanColumns:
    """Which columns of ``X`` (n_samples, n_features) to keep, and why each other one goes.

    In this order: **constant** columns; every **duplicate** (exactly equal to an earlier
    non-constant column); with ``max_correlation`` every **near-copy** (|Pearson r| >
    ``max_correlation`` with an earlier kept column, greedily in column order, so that each
    dropped column has a kept stand-in). The default drops only constant and duplicate columns
    (:func:`informative_columns`).
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D feature matrix, got shape {X.shape}")
    if max_correlation is not None and not 0.0 < max_correlation <= 1.0:
        raise ValueError(f"max_correlation must be in (0, 1] or None, got {max_correlation!r}")
    p = X.shape[1]
    representative = np.full(p, -1, dtype=np.int64)
    reason = np.full(p, "constant", dtype=f"<U{max(map(len, REASONS))}")
    if X.shape[0] == 0:
        return CleanColumns(np.zeros(0, dtype=np.int64), representative, reason)
    constant = np.all(X == X[:1], axis=0)
    # exact equality of whole columns: group by the bytes of each column (NaN-safe, -0.0 != 0.0
    # bytewise, which only keeps a column that a value-wise test would drop)
    columns = np.ascontiguousarray(X.T)
    first_of: dict[bytes, int] = {}
    for j in np.flatnonzero(~constant):
        representative[j] = first_of.setdefault(columns[j].tobytes(), int(j))
    distinct = representative == np.arange(p)
    reason[(representative >= 0) & ~distinct] = "duplicate"
    reason[distinct] = "kept"
    if max_correlation is not None:
        copies = _near_copies(X, np.flatnonzero(distinct), float(max_correlation))
        for j, stand_in in copies.items():
            representative[j] = stand_in
            reason[j] = "near-copy"
        # an exact duplicate of a near-copy is stood in for by the near-copy's kept column
        dup = reason == "duplicate"
        representative[dup] = representative[representative[dup]]
    kept = np.flatnonzero(representative == np.arange(p))
    return CleanColumns(kept, representative, reason)


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
    kept, representative, _ = clean_columns(X)
    return kept, representative
