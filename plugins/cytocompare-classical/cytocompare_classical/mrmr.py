"""Minimum-redundancy-maximum-relevance (mRMR) feature selection (Peng, Long & Ding 2005).

:func:`mrmr_select` reproduces the selection of Peng's C++ code as shipped in pymrmr 0.1.11
(``mrmr.cpp``) pick for pick, but incrementally: relevance ``I(f; c)`` is computed once, and each
round computes the mutual information of the *newly selected* feature against the remaining
candidates only (O(K·p·n) in all, never the p×p matrix). Details copied from the C++ so that the
picks are identical, ties included:

* MI in bits from the joint histogram, with the C++ arithmetic: ``p(a,b) = count / n``,
  marginals summed over the joint table in ascending state order, and
  ``sum p(a,b)·log(p(a,b)/p(a)/p(b)) / log(2)`` over non-zero cells; the candidate is the outer
  loop and the already-selected variable (or the class) the inner one, as in
  ``calMutualInfo(data, selected, candidate)``.
* The first pick and the candidate order come from sorting ``float(-I(f; c))`` (single
  precision, as ``mival`` is ``float`` in the C++) with Numerical Recipes' ``sort2``
  (quicksort, not stable); ties in a round go to the candidate that comes first in that order
  (strict ``>``).
* Only the ``pool_size`` (5000 in pymrmr) most relevant features are candidates.
* MID: ``I(f;c) - mean_s I(f;s)``; MIQ: ``I(f;c) / (mean_s I(f;s) + 0.0001)``.
* States are the integer values; the C++ shifts each column to start at 0, which only adds
  empty rows or columns to the joint table and does not change any sum.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
import warnings
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, ClassVar, Literal

import numba
import numpy as np
from sklearn.base import TransformerMixin
# scikit-learn's parameter-constraint types (private module; the ``_parameter_constraints`` way)
from sklearn.utils._param_validation import Interval, StrOptions

from cytocompare.base import BaseComponent, check_is_fitted
from cytocompare.protocols import Tags
from cytocompare_classical._validation import validate_features, validate_training_data
from cytocompare_classical.discretize import apply_thresholds, fit_thresholds
from cytocompare_classical.informative import clean_columns

__all__ = ["MRMRSelector", "mrmr_select", "mutual_information", "PYMRMR_INSTALL_HINT"]

#: pymrmr's hard-coded candidate pool (``poolUseFeaLen`` in its ``mrmr.cpp``)
PYMRMR_POOL_SIZE = 5000
#: MIQ's guard against division by zero, as in Peng's code
MIQ_EPS = 0.0001
#: the constant GCC folds ``x / log(2)`` into under -Ofast (1/ln 2, correctly rounded)
_INV_LN2 = 1.4426950408889634
PYMRMR_INSTALL_HINT = (
    "the 'pymrmr' backend needs pymrmr (Peng's C++ code; academic/non-profit licence only). "
    "Install it with: pip install cython && pip install --no-build-isolation pymrmr"
)


# --------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _mi_from_counts(cnt: np.ndarray, s1: int, s2: int, n: int) -> float:
    """MI in bits of a joint count table ``cnt[j * s1 + i]`` (j: candidate state, i: state of
    the first variable), bit-for-bit as pymrmr's compiled ``compute_mutualinfo``.

    pymrmr 0.1.11 is built with ``-O3 -Ofast`` (see ``DW_AT_producer`` in its .so), and GCC 12
    turns the plain loops of ``mrmr.cpp`` into the operations below (read off the disassembly):
    ``p = count * (1/n)``; the marginal over candidate states is summed two lanes at a time
    (even and odd states, SSE2) and the lanes added, plus the odd last state; ``log(p / (p1 *
    p2))``; the sum times the constant ``1/log(2)``. Reproducing these exactly is what makes
    exact ties (duplicate or state-permuted features) break the same way as in pymrmr.
    """
    inv = 1.0 / n
    p1 = np.zeros(s1)
    p2 = np.zeros(s2)
    s2_even = s2 - (s2 & 1)
    for i in range(s1):
        if s2 == 1:
            v = cnt[i] * inv
            p1[i] = 0.0 + v
            p2[0] += v
            continue
        lane0 = 0.0
        lane1 = 0.0
        for j in range(0, s2_even, 2):
            v0 = cnt[j * s1 + i] * inv
            v1 = cnt[(j + 1) * s1 + i] * inv
            lane0 += v0
            lane1 += v1
            p2[j] += v0
            p2[j + 1] += v1
        acc = 0.0 + (lane1 + lane0)
        if s2_even != s2:
            v = cnt[s2_even * s1 + i] * inv
            acc += v
            p2[s2_even] += v
        p1[i] = acc
    mu = 0.0
    for j in range(s2):
        for i in range(s1):
            c = cnt[j * s1 + i]
            if c != 0 and p1[i] != 0.0 and p2[j] != 0.0:
                pab = c * inv
                mu += pab * np.log(pab / (p1[i] * p2[j]))
    return mu * _INV_LN2


@numba.njit(cache=True, parallel=True)
def _mi_one_vs_many(
    first: np.ndarray, s1: int, codes: np.ndarray, cols: np.ndarray, col_min: np.ndarray, col_max: np.ndarray
) -> np.ndarray:
    """MI(first; codes[c]) for every c in ``cols``; ``codes`` is feature-major (p, n) uint8.

    Each candidate's states are shifted to start at 0 and counted up to its own maximum, as
    pymrmr's ``copyvecdata`` does (it matters for the lane split of the marginal sums). The joint
    histogram of one pair is a single pass over n bytes; candidates run in parallel.
    """
    n = first.shape[0]
    out = np.empty(cols.shape[0])
    for t in numba.prange(cols.shape[0]):
        c = cols[t]
        col = codes[c]
        lo = np.int64(col_min[c])
        s2 = np.int64(col_max[c]) - lo + 1
        cnt = np.zeros(s1 * s2, dtype=np.int64)
        for r in range(n):
            cnt[(np.int64(col[r]) - lo) * s1 + first[r]] += 1
        out[t] = _mi_from_counts(cnt, s1, s2, n)
    return out


@numba.njit(cache=True)
def _nr_sort2(arr: np.ndarray, brr: np.ndarray) -> None:
    """Numerical Recipes ``sort2`` on ``arr[1..n]`` (1-based, ``arr[0]`` untouched), carrying
    ``brr`` along; a faithful port so that ties end up in the same order as in pymrmr."""
    n = arr.shape[0] - 1
    M = 7
    istack = np.zeros(2 * 64 + 2, dtype=np.int64)
    jstack = 0
    ir = n
    l = 1  # noqa: E741 - names as in the original
    while True:
        if ir - l < M:
            for j in range(l + 1, ir + 1):
                a = arr[j]
                b = brr[j]
                i = j - 1
                while i >= 1:
                    if arr[i] <= a:
                        break
                    arr[i + 1] = arr[i]
                    brr[i + 1] = brr[i]
                    i -= 1
                arr[i + 1] = a
                brr[i + 1] = b
            if jstack == 0:
                return
            ir = istack[jstack]
            l = istack[jstack - 1]  # noqa: E741
            jstack -= 2
        else:
            k = (l + ir) >> 1
            arr[k], arr[l + 1] = arr[l + 1], arr[k]
            brr[k], brr[l + 1] = brr[l + 1], brr[k]
            if arr[l + 1] > arr[ir]:
                arr[l + 1], arr[ir] = arr[ir], arr[l + 1]
                brr[l + 1], brr[ir] = brr[ir], brr[l + 1]
            if arr[l] > arr[ir]:
                arr[l], arr[ir] = arr[ir], arr[l]
                brr[l], brr[ir] = brr[ir], brr[l]
            if arr[l + 1] > arr[l]:
                arr[l + 1], arr[l] = arr[l], arr[l + 1]
                brr[l + 1], brr[l] = brr[l], brr[l + 1]
            i = l + 1
            j = ir
            a = arr[l]
            b = brr[l]
            while True:
                i += 1
                while arr[i] < a:
                    i += 1
                j -= 1
                while arr[j] > a:
                    j -= 1
                if j < i:
                    break
                arr[i], arr[j] = arr[j], arr[i]
                brr[i], brr[j] = brr[j], brr[i]
            arr[l] = arr[j]
            arr[j] = a
            brr[l] = brr[j]
            brr[j] = b
            jstack += 2
            if ir - i + 1 >= j - l:
                istack[jstack] = ir
                istack[jstack - 1] = i
                ir = j - 1
            else:
                istack[jstack] = j - 1
                istack[jstack - 1] = l
                l = i  # noqa: E741


# --------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------

def _as_codes(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Non-negative uint8 codes preserving the order of integer states, and their count."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a), int(a.max()) + 1 if a.size else 1
    if a.dtype.kind not in "iub":
        raise ValueError(f"discrete data must be integers, got dtype {a.dtype}")
    lo = int(a.min()) if a.size else 0
    hi = int(a.max()) if a.size else 0
    if hi - lo > 255:
        raise ValueError(f"discrete data must span at most 256 states, got values {lo}..{hi}")
    return np.ascontiguousarray((a - lo).astype(np.uint8)), hi - lo + 1


def _encode_labels(y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Class labels (any sortable type) -> uint8 codes in sorted label order, and the classes."""
    classes, inv = np.unique(np.asarray(y), return_inverse=True)
    if classes.size > 256:
        raise ValueError(f"at most 256 classes are supported, got {classes.size}")
    return inv.astype(np.uint8).ravel(), classes


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information I(a; b) in bits of two discrete integer vectors.

    The plug-in (maximum-likelihood) estimate from the joint histogram, computed with the same
    floating-point steps as pymrmr's ``calMutualInfo(data, a, b)``. Equal to
    ``sklearn.metrics.mutual_info_score(a, b) / log(2)`` up to rounding.
    """
    ac, s1 = _as_codes(np.ravel(a))
    bc, s2 = _as_codes(np.ravel(b))
    if ac.shape != bc.shape:
        raise ValueError(f"a and b differ in length: {ac.size} != {bc.size}")
    if ac.size == 0:
        raise ValueError("mutual information of empty vectors is undefined")
    bm = np.array([bc.min()], dtype=np.uint8)
    bx = np.array([bc.max()], dtype=np.uint8)
    return float(_mi_one_vs_many(ac, s1, bc[None, :], np.zeros(1, dtype=np.int64), bm, bx)[0])


def _relevance_order(relevance: np.ndarray) -> np.ndarray:
    """Feature indices in pymrmr's candidate order: sort2 on float32(-relevance)."""
    p = relevance.shape[0]
    arr = np.empty(p + 1, dtype=np.float32)
    arr[0] = 0.0  # slot of the class variable; sort2 never touches it
    arr[1:] = (-relevance).astype(np.float32)
    # pymrmr stores indices as float; features are columns 1..p of its table
    brr = np.arange(p + 1, dtype=np.float32)
    _nr_sort2(arr, brr)
    return brr[1:].astype(np.int64) - 1


def _mrmr_core(
    codes_fm: np.ndarray,
    yc: np.ndarray,
    n_classes: int,
    k: int,
    method: str,
    pool_size: int | None,
) -> tuple[list[int], np.ndarray, list[float]]:
    """Selection on feature-major uint8 codes; returns (picks, relevance, pick scores)."""
    if method not in ("MIQ", "MID"):
        raise ValueError(f"method must be 'MIQ' or 'MID', got {method!r}")
    p, n = codes_fm.shape
    if p == 0:
        raise ValueError("no features to select from")
    all_cols = np.arange(p, dtype=np.int64)
    col_min = codes_fm.min(axis=1)
    col_max = codes_fm.max(axis=1)
    relevance = _mi_one_vs_many(yc, n_classes, codes_fm, all_cols, col_min, col_max)
    order = _relevance_order(relevance)
    pool_len = p if pool_size is None else min(int(pool_size), p)
    k = min(int(k), pool_len)
    pool = order[:pool_len]  # candidates, in the order pymrmr visits them
    selected = [int(pool[0])]
    scores = [float(relevance[pool[0]])]
    remaining = np.ones(pool_len, dtype=bool)
    remaining[0] = False
    red_sum = np.zeros(pool_len)  # sum over selected s of I(f; s), accumulated in pick order
    rel_pool = relevance[pool]
    for step in range(1, k):
        # only the newest pick's MI against the pool is new this round
        newest = codes_fm[selected[-1]]
        red_sum += _mi_one_vs_many(newest, int(col_max[selected[-1]]) + 1, codes_fm, pool, col_min, col_max)
        red = red_sum / step
        score = rel_pool - red if method == "MID" else rel_pool / (red + MIQ_EPS)
        score[~remaining] = -np.inf
        best = int(np.argmax(score))  # first maximum = strict '>' over the pool order
        remaining[best] = False
        selected.append(int(pool[best]))
        scores.append(float(score[best]))
    return selected, relevance, scores


def mrmr_select(
    Xd: np.ndarray,
    y: Sequence[Any] | np.ndarray,
    k: int,
    method: Literal["MIQ", "MID"] = "MIQ",
    pool_size: int | None = PYMRMR_POOL_SIZE,
) -> list[int]:
    """Peng's incremental mRMR on discrete features; the same picks as pymrmr.

    Parameters
    ----------
    Xd : int array of shape (n_samples, n_features)
        Discrete features (e.g. the output of :func:`~cytocompare_classical.discretize.
        apply_thresholds`), at most 256 distinct consecutive values per array.
    y : array-like of shape (n_samples,)
        Class labels (int or str); coded in sorted order.
    k : int
        Number of features to select; clamped to the pool size.
    method : {"MIQ", "MID"}
        Quotient ``I(f;c) / (mean I(f;s) + 1e-4)`` or difference ``I(f;c) - mean I(f;s)``.
    pool_size : int or None
        Only the ``pool_size`` most relevant features are candidates (pymrmr: 5000). ``None``:
        all features.

    Returns
    -------
    list of int
        Column indices in pick order.
    """
    Xd = np.asarray(Xd)
    if Xd.ndim != 2:
        raise ValueError(f"Xd must be 2-D, got shape {Xd.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    codes, _ = _as_codes(Xd)
    yc, classes = _encode_labels(y)
    if yc.shape[0] != codes.shape[0]:
        raise ValueError(f"Xd has {codes.shape[0]} rows but y has {yc.shape[0]} labels")
    picks, _, _ = _mrmr_core(np.ascontiguousarray(codes.T), yc, classes.size, k, method, pool_size)
    return picks


# --------------------------------------------------------------------------------------------
# optional pymrmr backend
# --------------------------------------------------------------------------------------------

def _import_pymrmr() -> types.ModuleType:
    """Import pymrmr, or raise ImportError with the install command.

    pymrmr's wrapper executes ``import pandas`` at import time but never uses pandas (its
    ``mRMR`` only reads ``data.copy().values`` and ``data.columns``). When pandas is absent we
    import it with a placeholder module in ``sys.modules`` and remove the placeholder at once.
    """
    try:
        import pymrmr  # type: ignore[import-not-found]
        return pymrmr
    except ModuleNotFoundError as exc:
        if exc.name != "pandas":
            raise ImportError(PYMRMR_INSTALL_HINT) from exc
    placeholder = types.ModuleType("pandas")
    sys.modules["pandas"] = placeholder
    try:
        import pymrmr  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - broken build
        raise ImportError(PYMRMR_INSTALL_HINT) from exc
    finally:
        if sys.modules.get("pandas") is placeholder:
            del sys.modules["pandas"]
    return pymrmr


class _Frame:
    """The two DataFrame attributes pymrmr's ``mRMR`` reads (avoids needing pandas)."""

    def __init__(self, rows: list[list[int]], columns: np.ndarray) -> None:
        self.values = rows
        self.columns = columns

    def copy(self) -> _Frame:
        return self


@contextlib.contextmanager
def _silence_stdout():
    """Peng's C++ printf()s two tables per call; send fd 1 to /dev/null meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        # flush C stdio buffers (printf) while fd 1 still points at /dev/null
        try:
            import ctypes
            ctypes.CDLL(None).fflush(None)
        except Exception:  # pragma: no cover
            pass
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def pymrmr_select(
    Xd: np.ndarray, y: Sequence[Any] | np.ndarray, k: int, method: Literal["MIQ", "MID"] = "MIQ",
    quiet: bool = True,
) -> list[int]:
    """Run pymrmr (Peng's C++) on discrete ``Xd``; returns column indices in pick order.

    ``k`` must not exceed ``min(5000, n_features)`` (pymrmr would return the class column).
    """
    pymrmr = _import_pymrmr()
    codes, _ = _as_codes(np.asarray(Xd))
    yc, _ = _encode_labels(y)
    p = codes.shape[1]
    if not 1 <= k <= min(PYMRMR_POOL_SIZE, p):
        raise ValueError(f"k must be in [1, {min(PYMRMR_POOL_SIZE, p)}] for pymrmr, got {k}")
    names = np.array(["class"] + [f"f{j}" for j in range(p)])
    rows = np.column_stack([yc.astype(np.int64), codes.astype(np.int64)]).tolist()
    ctx = _silence_stdout() if quiet else contextlib.nullcontext()
    with ctx:
        picked = pymrmr.mRMR(_Frame(rows, names), method, int(k))
    return [int(str(name)[1:]) for name in picked]


# --------------------------------------------------------------------------------------------
# the component
# --------------------------------------------------------------------------------------------

class MRMRSelector(TransformerMixin, BaseComponent):
    """mRMR feature selection (Peng 2005) on features discretised with training thresholds.

    A scikit-learn transformer (``fit_transform``, ``Pipeline``, ``GridSearchCV``; it passes
    ``check_estimator``). Not a ``SelectorMixin``: that mixin keeps columns in input order, and
    this selector keeps them in pick order (``transform`` and ``get_support(indices=True)``), the
    order the runner records and the classifier sees.

    Parameters
    ----------
    k : int
        Number of features to keep; clamped (with a warning, also kept in ``warnings_``) to
        the number of candidates.
    method : {"MIQ", "MID"}
        Peng's quotient or difference criterion.
    discretization : {"sigma", "quantile"}
        ``"sigma"``: Peng's 3 states at mean ± ``sigma_k``·sd; ``"quantile"``: ``n_bins``
        equal-frequency states. See :mod:`cytocompare_classical.discretize`.
    sigma_k : float
        Half-width of the middle state, in standard deviations.
    n_bins : int
        States for ``"quantile"``.
    backend : {"native", "pymrmr"}
        ``"native"``: this module's implementation (same picks, much faster). ``"pymrmr"``:
        the picks come from Peng's C++ via the optional, academic-licence pymrmr package (the
        native selection still runs, for ``relevance_``; ``scores_`` are NaN, as pymrmr does
        not return its criterion values). Only with the default ``pool_size``.
    pool_size : int or None
        Candidates are the ``pool_size`` most relevant features (pymrmr: 5000, fixed);
        ``None`` considers all.
    drop_uninformative : bool
        Before selection, drop the columns that are constant on the training rows or exact
        copies of an earlier column (:func:`~cytocompare_classical.informative.informative_columns`,
        fit on the training rows only). Picks are still indices of the input columns. False
        reproduces pymrmr on the full matrix.
    max_correlation : float in (0, 1] or None
        With ``drop_uninformative``, also drop every *near-copy*: a column whose absolute Pearson
        correlation on the training rows with an earlier kept column exceeds this value (greedy
        in column order; :func:`~cytocompare_classical.informative.clean_columns`). None
        (default): exact copies only.

    Attributes
    ----------
    selected_ : ndarray of int
        Chosen columns in pick order.
    relevance_ : ndarray of float
        I(feature; class) in bits on the training rows, for every input column.
    scores_ : ndarray of float
        The criterion value of each pick (the first pick's relevance, then MIQ/MID).
    thresholds_ : ndarray of shape (n_features, n_thresholds)
        Discretisation thresholds fitted on the training rows.
    n_features_in_ : int
    classes_ : ndarray
    warnings_ : list of str
    informative_ : ndarray of int
        The candidate input columns (all of them unless ``drop_uninformative``).
    n_constant_, n_duplicate_ : int
        Columns dropped as constant and as exact duplicates (0 unless ``drop_uninformative``).
    n_near_copy_ : int
        Columns dropped by ``max_correlation`` (0 unless set).
    """

    tags: ClassVar[Tags] = Tags(deterministic=True)
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "k": [Interval(Integral, 1, None, closed="left")],
        "method": [StrOptions({"MIQ", "MID"})],
        "discretization": [StrOptions({"sigma", "quantile"})],
        "sigma_k": [Interval(Real, 0, None, closed="left")],
        "n_bins": [Interval(Integral, 2, 255, closed="both")],
        "backend": [StrOptions({"native", "pymrmr"})],
        "pool_size": [Interval(Integral, 1, None, closed="left"), None],
        "drop_uninformative": ["boolean"],
        "max_correlation": [Interval(Real, 0, 1, closed="right"), None],
    }

    def __init__(
        self,
        k: int = 50,
        method: str = "MIQ",
        discretization: str = "sigma",
        sigma_k: float = 1.0,
        n_bins: int = 3,
        backend: str = "native",
        pool_size: int | None = PYMRMR_POOL_SIZE,
        drop_uninformative: bool = False,
        max_correlation: float | None = None,
    ) -> None:
        self.k = k
        self.method = method
        self.discretization = discretization
        self.sigma_k = sigma_k
        self.n_bins = n_bins
        self.backend = backend
        self.pool_size = pool_size
        self.drop_uninformative = drop_uninformative
        self.max_correlation = max_correlation

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True  # supervised: relevance is I(feature; class)
        return tags

    def _validate(self) -> None:
        """Constructor parameters against ``_parameter_constraints`` (scikit-learn's messages)."""
        self._validate_params()
        if isinstance(self.k, bool):  # an Integral to Python, not a number of features
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        self.validate_params()

    def validate_params(self) -> None:
        """The checks across parameters (the protocol validator calls this too)."""
        if not self.drop_uninformative and self.max_correlation is not None:
            raise ValueError("max_correlation refines drop_uninformative; "
                             "set drop_uninformative: true to use it")

    def discretize(self, X: np.ndarray) -> np.ndarray:
        """uint8 codes (n_samples, n_features) of ``X`` with the fitted training thresholds."""
        check_is_fitted(self, "thresholds_")
        X = validate_features(self, X, reset=False)
        return apply_thresholds(X, self.thresholds_, self.discretization)

    def fit(self, X: np.ndarray, y: np.ndarray) -> MRMRSelector:
        """Fit thresholds on ``X`` (the training rows) and select ``k`` columns."""
        self._validate()
        X, y = validate_training_data(self, X, y)
        p = X.shape[1]
        thresholds = fit_thresholds(X, self.discretization, self.sigma_k, self.n_bins)
        if self.drop_uninformative:
            informative, _, reason = clean_columns(X, self.max_correlation)
            if informative.size == 0:
                raise ValueError(f"no informative column to select from: every column is constant "
                                 f"on the training rows (n_samples={X.shape[0]})")
        else:
            informative, reason = np.arange(p), np.full(p, "kept")
        codes_fm = apply_thresholds(X[:, informative], thresholds[informative], self.discretization,
                                    feature_major=True)
        yc, classes = _encode_labels(y)

        notes: list[str] = []
        p_in, p = p, informative.size  # selection runs on the informative columns
        pool = p if self.pool_size is None else min(int(self.pool_size), p)
        k = int(self.k)
        if k > pool:
            msg = (f"k={k} exceeds the {pool} candidate features "
                   f"({p} features of {p_in} informative, pool_size={self.pool_size}); selecting {pool}")
            warnings.warn(msg, UserWarning, stacklevel=2)
            notes.append(msg)
            k = pool

        picks, relevance, scores = _mrmr_core(codes_fm, yc, classes.size, k, self.method, self.pool_size)
        if self.backend == "pymrmr":
            if pool != min(PYMRMR_POOL_SIZE, p):
                raise ValueError(
                    f"the pymrmr backend always uses a pool of {PYMRMR_POOL_SIZE} features; "
                    f"pool_size={self.pool_size} cannot be honoured (use backend='native')"
                )
            # the picks from Peng's own code; relevance_ stays the native I(f;c) (the same maths);
            # pymrmr does not return its criterion values, so scores_ are NaN
            picks = pymrmr_select(codes_fm.T, yc, k, self.method)
            scores = [float("nan")] * len(picks)

        # back to input columns; a dropped column's relevance is its own I(f; c) on the training
        # rows (a duplicate's equals its twin's, a constant's is 0)
        full_relevance = np.zeros(p_in)
        full_relevance[informative] = relevance
        dropped = np.setdiff1d(np.arange(p_in), informative)
        if dropped.size:
            dcodes = apply_thresholds(X[:, dropped], thresholds[dropped], self.discretization,
                                      feature_major=True)
            full_relevance[dropped] = _mi_one_vs_many(
                yc, classes.size, dcodes, np.arange(dropped.size, dtype=np.int64),
                dcodes.min(axis=1), dcodes.max(axis=1))
        full_relevance[reason == "constant"] = 0.0  # exactly, not a rounding residue
        self.thresholds_ = thresholds
        self.classes_ = classes
        self.relevance_ = full_relevance
        self.informative_ = informative
        self.n_constant_ = int((reason == "constant").sum())
        self.n_duplicate_ = int((reason == "duplicate").sum())
        self.n_near_copy_ = int((reason == "near-copy").sum())
        self.selected_ = informative[np.asarray(picks, dtype=np.int64)]
        self.scores_ = np.asarray(scores, dtype=np.float64)
        self.warnings_ = notes
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """The selected columns of ``X``, in pick order."""
        check_is_fitted(self, "selected_")
        X = validate_features(self, X, reset=False)
        return X[:, self.selected_]

    def get_support(self, indices: bool = False) -> np.ndarray:
        """Boolean mask over input columns, or (``indices=True``) the picks in pick order."""
        check_is_fitted(self, "selected_")
        if indices:
            return self.selected_.copy()
        mask = np.zeros(self.n_features_in_, dtype=bool)
        mask[self.selected_] = True
        return mask
