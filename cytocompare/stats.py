"""Paired statistics between methods evaluated on the identical split (pure maths, no files).

Every method of a run is tested on the images of the same split plan, so comparisons can be
*paired*: per image (McNemar's test, paired bootstrap) and per fold (paired t-test, Wilcoxon
signed-rank test), overall (balanced accuracy) and per class (recall; :func:`compare_methods_per_class`).
Only the images *both* methods were tested on are paired: a method may have
left some out (``on_feature_failure: skip``, a fold not yet run), and every row says how many
images each method was tested on alone (``n_only_a``, ``n_only_b``), which the comparison
ignores. See docs/metrics.md. Reading the predictions of a run directory is
:func:`cytocompare.evaluation.paired_comparisons`'s job.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as sps

from cytocompare.metrics import balanced_accuracy
from cytocompare.tolerance import ToleranceMap

#: below this many discordant pairs McNemar uses the exact binomial test
MCNEMAR_EXACT_BELOW = 25


class McNemarResult(NamedTuple):
    b: int  # a right, b wrong
    c: int  # a wrong, b right
    p_value: float


class FoldTestResult(NamedTuple):
    n: int
    mean_diff: float
    sd_diff: float
    t_p: float
    wilcoxon_p: float


class BootstrapResult(NamedTuple):
    diff: float
    low: float
    high: float


def mcnemar(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray) -> McNemarResult:
    """McNemar's test on paired per-image correctness of two methods.

    Parameters
    ----------
    correct_a, correct_b
        Boolean arrays: was image i classified correctly by method a / b.

    Returns
    -------
    McNemarResult
        ``b`` = images only a got right, ``c`` = images only b got right, and the two-sided p.

    Notes
    -----
    With fewer than :data:`MCNEMAR_EXACT_BELOW` (25) discordant images, the exact two-sided
    binomial test of ``b`` out of ``b + c`` against 0.5 (:func:`scipy.stats.binomtest`);
    otherwise the chi-square statistic with continuity correction,
    ``(|b - c| - 1)^2 / (b + c)`` on 1 degree of freedom. ``p = 1`` when ``b + c == 0``.
    """
    a = np.asarray(correct_a, dtype=bool)
    bb = np.asarray(correct_b, dtype=bool)
    if a.shape != bb.shape:
        raise ValueError(f"correct_a and correct_b differ in shape: {a.shape} vs {bb.shape}")
    b = int(np.sum(a & ~bb))
    c = int(np.sum(~a & bb))
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 1.0)
    if n < MCNEMAR_EXACT_BELOW:
        p = float(sps.binomtest(b, n, 0.5, alternative="two-sided").pvalue)
    else:
        stat = (abs(b - c) - 1) ** 2 / n
        p = float(sps.chi2.sf(stat, df=1))
    return McNemarResult(b, c, min(p, 1.0))


def paired_fold_test(scores_a: Sequence[float], scores_b: Sequence[float]) -> FoldTestResult:
    """Paired tests of per-fold scores (e.g. balanced accuracy of each fold) of two methods.

    Returns the number of folds, mean and sample sd (``ddof=1``) of ``a - b``, the paired
    t-test p (:func:`scipy.stats.ttest_rel`) and the Wilcoxon signed-rank p
    (:func:`scipy.stats.wilcoxon`, exact for small n).

    Notes
    -----
    The Wilcoxon p is computed only with at least 5 folds (NaN otherwise) and is NaN when every
    difference is 0. With 5 folds its smallest possible two-sided p is ``2 / 2**5 = 0.0625``:
    it can never reach 0.05, so read it as a sign check, not as a significance test. Folds of one
    k-fold split share training images, so neither test's independence assumption holds
    exactly (Dietterich 1998); treat these p values as descriptive.
    """
    a = np.asarray(scores_a, dtype=float)
    b = np.asarray(scores_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError("scores_a and scores_b must have the same length")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = len(a)
    d = a - b
    nan = float("nan")
    mean = float(d.mean()) if n else nan
    sd = float(d.std(ddof=1)) if n > 1 else nan
    t_p = nan
    if n > 1 and np.any(d != 0):
        t_p = float(sps.ttest_rel(a, b).pvalue)
    w_p = nan
    if n >= 5 and np.any(d != 0):
        w_p = float(sps.wilcoxon(a, b).pvalue)
    return FoldTestResult(n, mean, sd, t_p, w_p)


def _balanced_accuracy_boot(class_idx: np.ndarray, correct: np.ndarray, idx: np.ndarray, k: int) -> float:
    cls = class_idx[idx]
    n_c = np.bincount(cls, minlength=k)
    hits = np.bincount(cls, weights=correct[idx].astype(float), minlength=k)
    present = n_c > 0
    return float(np.mean(hits[present] / n_c[present]))


def bootstrap_ci(
    y_true: Sequence[str] | np.ndarray,
    pred_a: Sequence[str] | np.ndarray,
    pred_b: Sequence[str] | np.ndarray,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    tolerance: ToleranceMap | None = None,
) -> BootstrapResult:
    """Paired bootstrap CI of balanced accuracy(a) − balanced accuracy(b) on the same images.

    Images are resampled with replacement (the same resample for both methods, which is what
    makes it paired); balanced accuracy is the mean recall over classes present in the
    resample. Percentile interval.

    Parameters
    ----------
    y_true, pred_a, pred_b
        Truth and the two methods' predictions for the same images, in the same order.
    n_boot
        Number of resamples.
    confidence
        Two-sided coverage of the interval.
    seed
        Seed of the resampling (same seed, same interval).
    tolerance
        Tolerant balanced accuracy when given.

    Returns
    -------
    BootstrapResult
        ``diff`` (observed), ``low``, ``high``.
    """
    t = np.asarray(y_true, dtype=object).astype(str)
    pa = np.asarray(pred_a, dtype=object).astype(str)
    pb = np.asarray(pred_b, dtype=object).astype(str)
    if not (t.shape == pa.shape == pb.shape):
        raise ValueError("y_true, pred_a and pred_b must have the same length")
    diff = balanced_accuracy(t, pa, tolerance) - balanced_accuracy(t, pb, tolerance)
    n = len(t)
    if n == 0:
        return BootstrapResult(float("nan"), float("nan"), float("nan"))
    ok_a = tolerance.correct(t, pa) if tolerance is not None else t == pa
    ok_b = tolerance.correct(t, pb) if tolerance is not None else t == pb
    classes, class_idx = np.unique(t, return_inverse=True)
    k = len(classes)
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        diffs[i] = _balanced_accuracy_boot(class_idx, ok_a, idx, k) - _balanced_accuracy_boot(class_idx, ok_b, idx, k)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return BootstrapResult(float(diff), float(low), float(high))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p values (NaN entries stay NaN and do not count)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


#: columns of metrics/paired_<split>.csv
PAIRED_COLUMNS = [
    "method_a", "method_b", "n_images", "n_only_a", "n_only_b", "n_folds",
    "balanced_accuracy_a", "balanced_accuracy_b", "diff", "ci_low", "ci_high",
    "mcnemar_b", "mcnemar_c", "mcnemar_p", "mcnemar_p_holm",
    "fold_mean_diff", "fold_sd_diff", "ttest_p", "ttest_p_holm", "wilcoxon_p",
]


class MethodPredictions(NamedTuple):
    """One method's predictions on one split: one row per test of an image, in fold order."""

    images: np.ndarray  # int image indices (the same image, the same index, for every method)
    folds: np.ndarray  # int fold of each row
    truth: np.ndarray  # str
    prediction: np.ndarray  # str


def _by_image(p: MethodPredictions) -> dict[int, int]:
    """image -> its row (an image tested in several folds keeps its last row)."""
    return {int(img): i for i, img in enumerate(p.images.tolist())}


def _aligned_pairs(methods: Mapping[str, MethodPredictions]):
    """Every pair of methods with predictions, in the order of ``methods``, and the rows of the
    images both were tested on, aligned by image index (pairs with no such image are left out).

    Yields ``(name_a, name_b, predictions_a, predictions_b, rows_a, rows_b)``; raises
    ``ValueError`` when the two disagree on the truth of an image.
    """
    present = {m: p for m, p in methods.items() if len(p.images)}
    rows_of = {m: _by_image(p) for m, p in present.items()}
    for ma, mb in itertools.combinations(present, 2):
        a, b = present[ma], present[mb]
        common = sorted(set(rows_of[ma]) & set(rows_of[mb]))
        if not common:
            continue
        ia = np.array([rows_of[ma][i] for i in common], dtype=np.int64)
        ib = np.array([rows_of[mb][i] for i in common], dtype=np.int64)
        if np.any(a.truth[ia] != b.truth[ib]):
            raise ValueError(f"{ma} and {mb} disagree on the truth of some images")
        yield ma, mb, a, b, ia, ib


def compare_methods(
    methods: Mapping[str, MethodPredictions], *, n_boot: int = 2000, seed: int = 0,
    tolerance: ToleranceMap | None = None,
) -> list[dict]:
    """Compare every pair of methods on the images both predicted.

    Rows are aligned by image index; methods without predictions are left out and pairs follow
    the order of ``methods``. ``n_images`` counts the images both were tested on (everything
    below is computed on those alone), ``n_only_a`` / ``n_only_b`` the images only a / only b was
    tested on (e.g. cells one method skipped because its features failed). Per pair: balanced
    accuracy of each, their difference with a paired bootstrap CI (:func:`bootstrap_ci`),
    McNemar's test on per-image correctness, and paired fold-wise tests of per-fold balanced
    accuracy (:func:`paired_fold_test`). Holm's correction is applied across pairs (``*_holm``
    columns). Strict, or tolerant with ``tolerance``.

    Returns
    -------
    list of dict
        One dict per pair with the keys of :data:`PAIRED_COLUMNS`.

    Raises
    ------
    ValueError
        When two methods disagree on the truth of an image.
    """
    rows: list[dict] = []
    for ma, mb, a, b, ia, ib in _aligned_pairs(methods):
        truth = a.truth[ia]
        pa, pb = a.prediction[ia], b.prediction[ib]
        fold_a, fold_b = a.folds[ia], b.folds[ib]
        ok_a = tolerance.correct(truth, pa) if tolerance is not None else truth == pa
        ok_b = tolerance.correct(truth, pb) if tolerance is not None else truth == pb
        mc = mcnemar(ok_a, ok_b)
        boot = bootstrap_ci(truth, pa, pb, n_boot=n_boot, seed=seed, tolerance=tolerance)
        folds = sorted(set(fold_a.tolist()))
        sa, sb = [], []
        for k in folds:
            sel = (fold_a == k) & (fold_b == k)  # identical plans put an image in the same fold
            if sel.any():
                sa.append(balanced_accuracy(truth[sel], pa[sel], tolerance))
                sb.append(balanced_accuracy(truth[sel], pb[sel], tolerance))
        ft = paired_fold_test(sa, sb)
        rows.append({
            "method_a": ma, "method_b": mb, "n_images": len(ia),
            "n_only_a": len(set(a.images.tolist())) - len(ia), "n_only_b": len(set(b.images.tolist())) - len(ia),
            "n_folds": len(sa),
            "balanced_accuracy_a": balanced_accuracy(truth, pa, tolerance),
            "balanced_accuracy_b": balanced_accuracy(truth, pb, tolerance),
            "diff": boot.diff, "ci_low": boot.low, "ci_high": boot.high,
            "mcnemar_b": mc.b, "mcnemar_c": mc.c, "mcnemar_p": mc.p_value,
            "fold_mean_diff": ft.mean_diff, "fold_sd_diff": ft.sd_diff,
            "ttest_p": ft.t_p, "wilcoxon_p": ft.wilcoxon_p,
        })
    for col in ("mcnemar_p", "ttest_p"):
        adj = holm([r[col] for r in rows])
        for r, v in zip(rows, adj, strict=True):
            r[f"{col}_holm"] = float(v)
    return rows


# ---------------------------------------------------------------------------- per class
#: columns of metrics/paired_per_class_<split>.csv (the reporter puts ``criterion`` first)
PAIRED_PER_CLASS_COLUMNS = [
    "method_a", "method_b", "class", "n", "recall_a", "recall_b", "diff", "ci_low", "ci_high",
    "mcnemar_b", "mcnemar_c", "p", "p_holm", "newcombe_low", "newcombe_high",
]


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def recall_diff_ci(
    correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray, *,
    n_boot: int = 2000, confidence: float = 0.95, seed: int = 0,
) -> BootstrapResult:
    """Paired bootstrap CI of recall(a) − recall(b) on the images of one class.

    ``correct_a[i]`` / ``correct_b[i]``: did a / b classify image i (all of one true class)
    correctly. The images are resampled with replacement, the same resample for both methods
    (:func:`scipy.stats.bootstrap` with ``paired=True``, vectorised, percentile interval,
    ``rng=numpy.random.default_rng(seed)``). Resampling every class within itself (a bootstrap
    stratified by class) leaves class c's recall depending on class c's resample alone, so this
    *is* the class-stratified bootstrap for one class.

    With fewer than 2 images the interval is NaN (``diff`` is still given).
    """
    a = np.asarray(correct_a, dtype=float)
    b = np.asarray(correct_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"correct_a and correct_b must be 1-d of the same length: {a.shape} vs {b.shape}")
    nan = float("nan")
    if len(a) == 0:
        return BootstrapResult(nan, nan, nan)
    diff = float(a.mean() - b.mean())
    if len(a) < 2:
        return BootstrapResult(diff, nan, nan)
    if np.all(a == a[0]) and np.all(b == b[0]):  # every resample gives the same difference
        return BootstrapResult(diff, diff, diff)
    res = sps.bootstrap((a, b), _mean_diff, paired=True, vectorized=True, n_resamples=n_boot,
                        confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return BootstrapResult(diff, float(ci.low), float(ci.high))


def newcombe_paired_ci(
    correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray, *, confidence: float = 0.95,
) -> tuple[float, float]:
    """Newcombe's square-and-add interval (1998, method 10) for recall(a) − recall(b) on paired images.

    From the Wilson score intervals of both proportions (statsmodels'
    ``proportion_confint(method="wilson")``) and the correlation ``phi`` of the paired 2×2 table
    (both right ``e``, only a ``f``, only b ``g``, neither ``h``; ``A = e h − f g``:
    ``phi = (A − n/2) / sqrt(...)`` when ``A > n/2``, 0 when ``0 ≤ A ≤ n/2``, ``A / sqrt(...)`` when
    ``A < 0``, 0 when a margin is empty). No resampling, so it needs no seed; (NaN, NaN) for no image.
    """
    from statsmodels.stats.proportion import proportion_confint

    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b differ in shape: {a.shape} vs {b.shape}")
    n = len(a)
    if n == 0:
        return float("nan"), float("nan")
    e, f, g, h = (int(np.sum(x)) for x in (a & b, a & ~b, ~a & b, ~a & ~b))
    p1, p2 = (e + f) / n, (e + g) / n
    alpha = 1 - confidence
    l1, u1 = proportion_confint(e + f, n, alpha=alpha, method="wilson")
    l2, u2 = proportion_confint(e + g, n, alpha=alpha, method="wilson")
    margins = (e + f) * (g + h) * (e + g) * (f + h)
    big_a = e * h - f * g
    phi = 0.0
    if margins > 0:
        if big_a > n / 2:
            phi = (big_a - n / 2) / np.sqrt(margins)
        elif big_a < 0:
            phi = big_a / np.sqrt(margins)
    d = p1 - p2
    low = d - np.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    high = d + np.sqrt(max((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2, 0.0))
    return float(low), float(high)


def mcnemar_exact(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray) -> McNemarResult:
    """Exact McNemar test (statsmodels' ``mcnemar(table, exact=True)``: two-sided binomial test
    of ``b`` out of ``b + c`` against 0.5); ``b`` = images only a got right, ``c`` = only b.
    ``p = 1`` when ``b + c == 0``."""
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    a = np.asarray(correct_a, dtype=bool)
    bb = np.asarray(correct_b, dtype=bool)
    if a.shape != bb.shape:
        raise ValueError(f"correct_a and correct_b differ in shape: {a.shape} vs {bb.shape}")
    b = int(np.sum(a & ~bb))
    c = int(np.sum(~a & bb))
    if b + c == 0:
        return McNemarResult(b, c, 1.0)
    table = [[int(np.sum(a & bb)), b], [c, int(np.sum(~a & ~bb))]]
    return McNemarResult(b, c, min(float(sm_mcnemar(table, exact=True).pvalue), 1.0))


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p values by statsmodels' ``multipletests(method="holm")``; NaN entries stay
    NaN and do not count as tests (:func:`holm` is the hand-written reference)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def per_class_pair(
    truth: np.ndarray, correct_a: np.ndarray, correct_b: np.ndarray, classes: Sequence[str] | None = None, *,
    n_boot: int = 2000, confidence: float = 0.95, seed: int = 0,
) -> list[dict]:
    """Per-class paired comparison of two methods on the same images (pure; no method names).

    For each class (``classes`` in that order, default the sorted truth values; classes with no
    image are left out): ``n`` images, ``recall_a``, ``recall_b``, ``diff`` = a − b with its
    paired bootstrap CI (:func:`recall_diff_ci`), exact McNemar ``mcnemar_b`` / ``mcnemar_c`` /
    ``p`` (:func:`mcnemar_exact`) and ``p_holm``, Holm-corrected across the classes
    (:func:`holm_adjust`), and Newcombe's interval ``newcombe_low`` / ``newcombe_high``
    (:func:`newcombe_paired_ci`).
    """
    t = np.asarray(truth).astype(str)
    ok_a = np.asarray(correct_a, dtype=bool)
    ok_b = np.asarray(correct_b, dtype=bool)
    if not (t.shape == ok_a.shape == ok_b.shape):
        raise ValueError("truth, correct_a and correct_b must have the same length")
    order = list(classes) if classes is not None else sorted(set(t.tolist()))
    rows = []
    for cls in order:
        sel = t == cls
        if not sel.any():
            continue
        boot = recall_diff_ci(ok_a[sel], ok_b[sel], n_boot=n_boot, confidence=confidence, seed=seed)
        mc = mcnemar_exact(ok_a[sel], ok_b[sel])
        nc_low, nc_high = newcombe_paired_ci(ok_a[sel], ok_b[sel], confidence=confidence)
        rows.append({
            "class": cls, "n": int(sel.sum()),
            "recall_a": float(ok_a[sel].mean()), "recall_b": float(ok_b[sel].mean()),
            "diff": boot.diff, "ci_low": boot.low, "ci_high": boot.high,
            "mcnemar_b": mc.b, "mcnemar_c": mc.c, "p": mc.p_value,
        })
        rows[-1]["newcombe_low"], rows[-1]["newcombe_high"] = nc_low, nc_high
    for r, v in zip(rows, holm_adjust([r["p"] for r in rows]), strict=True):
        r["p_holm"] = float(v)
    return rows


def compare_methods_per_class(
    methods: Mapping[str, MethodPredictions], *, classes: Sequence[str] | None = None,
    n_boot: int = 2000, seed: int = 0, tolerance: ToleranceMap | None = None,
) -> list[dict]:
    """Per-class recall differences of every pair of methods on the images both were tested on.

    Pairs and image alignment as in :func:`compare_methods`; per pair the rows of
    :func:`per_class_pair` (Holm across the classes of that pair), each with ``method_a`` and
    ``method_b``: the keys of :data:`PAIRED_PER_CLASS_COLUMNS`. ``classes`` gives the row order
    (default sorted). Strict, or tolerant with ``tolerance``.

    Raises
    ------
    ValueError
        When two methods disagree on the truth of an image.
    """
    out: list[dict] = []
    for ma, mb, a, b, ia, ib in _aligned_pairs(methods):
        truth = a.truth[ia]
        pa, pb = a.prediction[ia], b.prediction[ib]
        ok_a = tolerance.correct(truth, pa) if tolerance is not None else truth == pa
        ok_b = tolerance.correct(truth, pb) if tolerance is not None else truth == pb
        order = classes
        if order is not None:
            order = list(order) + sorted(set(truth.tolist()) - set(order))
        for r in per_class_pair(truth, ok_a, ok_b, order, n_boot=n_boot, seed=seed):
            out.append({"method_a": ma, "method_b": mb, **r})
    return out
