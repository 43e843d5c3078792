"""Paired statistics: McNemar, fold-wise tests, bootstrap CI, Holm, paired_comparisons.

The bootstrap is checked against a plain reimplementation (same seed, same resamples, balanced
accuracy from scikit-learn) and, loosely, against ``scipy.stats.bootstrap``; paired_comparisons
against scikit-learn and scipy on the raw arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from sklearn import metrics as skm

from cytocompare.evaluation import paired_comparisons
from cytocompare.metrics import balanced_accuracy
from cytocompare.rundir import RunDir
from cytocompare.stats import (
    PAIRED_COLUMNS, MethodPredictions, bootstrap_ci, compare_methods, holm, mcnemar, paired_fold_test,
)
from cytocompare.tolerance import ToleranceMap


def test_mcnemar_hand_case_exact() -> None:
    # 10 images: a right & b wrong on 3, a wrong & b right on 1, the rest agree
    a = np.array([1, 1, 1, 0, 1, 1, 0, 0, 1, 1], dtype=bool)
    b = np.array([0, 0, 0, 1, 1, 1, 0, 0, 1, 1], dtype=bool)
    res = mcnemar(a, b)
    assert (res.b, res.c) == (3, 1)
    # exact two-sided binomial: P(X<=1)+P(X>=3), X~Bin(4, .5) = (1+4+4+1)/16
    assert res.p_value == pytest.approx(10 / 16)
    assert res.p_value == pytest.approx(sps.binomtest(3, 4, 0.5).pvalue)


def test_mcnemar_chi2_branch() -> None:
    a = np.r_[np.ones(40, bool), np.zeros(20, bool), np.ones(100, bool)]
    b = np.r_[np.zeros(40, bool), np.ones(20, bool), np.ones(100, bool)]
    res = mcnemar(a, b)
    assert (res.b, res.c) == (40, 20)
    stat = (abs(40 - 20) - 1) ** 2 / 60
    assert res.p_value == pytest.approx(sps.chi2.sf(stat, 1))
    assert mcnemar(a, a).p_value == 1.0


def test_paired_fold_test_matches_scipy() -> None:
    a = [0.81, 0.84, 0.79, 0.86, 0.83]
    b = [0.78, 0.80, 0.80, 0.82, 0.79]
    res = paired_fold_test(a, b)
    d = np.subtract(a, b)
    assert res.n == 5
    assert res.mean_diff == pytest.approx(d.mean()) and res.sd_diff == pytest.approx(d.std(ddof=1))
    assert res.t_p == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert res.wilcoxon_p == pytest.approx(sps.wilcoxon(a, b).pvalue)
    assert res.wilcoxon_p >= 0.0625  # 5 folds: the smallest possible two-sided p
    short = paired_fold_test(a[:3], b[:3])
    assert np.isnan(short.wilcoxon_p) and np.isfinite(short.t_p)
    assert np.isnan(paired_fold_test(a, a).t_p)


def _case(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    classes = np.array(["A", "B", "C", "D"])
    y = rng.choice(classes, n, p=[0.4, 0.3, 0.2, 0.1])
    pa = np.where(rng.random(n) < 0.8, y, rng.choice(classes, n))
    pb = np.where(rng.random(n) < 0.7, y, rng.choice(classes, n))
    return y, pa, pb


def test_bootstrap_ci_contains_difference_and_is_reproducible() -> None:
    y, pa, pb = _case(0)
    res = bootstrap_ci(y, pa, pb, n_boot=500, seed=3)
    assert res.diff == pytest.approx(balanced_accuracy(y, pa) - balanced_accuracy(y, pb))
    assert res.low < res.diff < res.high
    assert bootstrap_ci(y, pa, pb, n_boot=500, seed=3) == res
    assert bootstrap_ci(y, pa, pb, n_boot=500, seed=4) != res
    narrow = bootstrap_ci(y, pa, pb, n_boot=500, seed=3, confidence=0.5)
    assert res.low <= narrow.low <= narrow.high <= res.high


def _tolerant_ba(y: np.ndarray, pred: np.ndarray, pairs: set[frozenset[str]]) -> float:
    """Tolerant balanced accuracy written out from its definition (docs/tolerance.md)."""
    ok = np.array([t == p or frozenset((t, p)) in pairs for t, p in zip(y.tolist(), pred.tolist(), strict=True)])
    return float(np.mean([ok[y == c].mean() for c in np.unique(y)]))


def reference_bootstrap(y: np.ndarray, pa: np.ndarray, pb: np.ndarray, *, n_boot: int, confidence: float,
                        seed: int, pairs: set[frozenset[str]] | None = None) -> tuple[float, float, float]:
    """The documented procedure, written plainly: n_boot resamples of the images with replacement
    from ``default_rng(seed)``, the same for both methods; percentile interval of BA(a) - BA(b)."""
    def ba(t: np.ndarray, p: np.ndarray) -> float:
        return skm.balanced_accuracy_score(t, p) if pairs is None else _tolerant_ba(t, p, pairs)

    rng = np.random.default_rng(seed)
    n = len(y)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        diffs.append(ba(y[idx], pa[idx]) - ba(y[idx], pb[idx]))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return ba(y, pa) - ba(y, pb), float(low), float(high)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize(("seed", "confidence"), [(3, 0.95), (5, 0.9)])
def test_bootstrap_ci_equals_plain_reimplementation(seed: int, confidence: float) -> None:
    y, pa, pb = _case(seed, n=150)
    res = bootstrap_ci(y, pa, pb, n_boot=300, seed=seed, confidence=confidence)
    ref = reference_bootstrap(y, pa, pb, n_boot=300, confidence=confidence, seed=seed)
    assert res == pytest.approx(ref, abs=1e-12)
    pairs = {frozenset(("A", "B")), frozenset(("C", "D"))}
    tol = bootstrap_ci(y, pa, pb, n_boot=300, seed=seed, confidence=confidence, tolerance=ToleranceMap(pairs))
    ref_tol = reference_bootstrap(y, pa, pb, n_boot=300, confidence=confidence, seed=seed, pairs=pairs)
    assert tol == pytest.approx(ref_tol, abs=1e-12)
    assert tol != pytest.approx(res, abs=1e-6)  # the tolerance map changes the numbers


def test_bootstrap_ci_agrees_with_scipy_bootstrap() -> None:
    # an independent resampler (scipy's, its own random stream): the intervals agree to Monte
    # Carlo error (about 0.003 here), not to the last digit
    y, pa, pb = _case(0)
    ok_a, ok_b = y == pa, y == pb
    classes = np.unique(y)

    def diff(idx: np.ndarray) -> float:
        t = y[idx]
        return float(np.mean([ok_a[idx][t == c].mean() for c in classes if np.any(t == c)])
                     - np.mean([ok_b[idx][t == c].mean() for c in classes if np.any(t == c)]))

    ref = sps.bootstrap((np.arange(len(y)),), diff, n_resamples=2000, confidence_level=0.95,
                        method="percentile", vectorized=False, rng=np.random.default_rng(1))
    res = bootstrap_ci(y, pa, pb, n_boot=2000, seed=0)
    assert res.low == pytest.approx(ref.confidence_interval.low, abs=0.015)
    assert res.high == pytest.approx(ref.confidence_interval.high, abs=0.015)


def test_holm() -> None:
    p = [0.01, 0.04, 0.03, np.nan]
    # sorted 0.01, 0.03, 0.04 with m=3: 0.03, 0.06, 0.06 (monotone)
    np.testing.assert_allclose(holm(p)[:3], [0.03, 0.06, 0.06])
    assert np.isnan(holm(p)[3])


def test_paired_comparisons_on_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    y, pa, pb = _case(1, n=300)
    pc = np.where(np.arange(300) % 3 == 0, "A", y)
    folds = np.arange(300) % 5
    for name, pred in (("a", pa), ("b", pb), ("c", pc)):
        for k in range(5):
            sel = folds == k
            run.write_predictions(name, "cv", k, images=np.flatnonzero(sel), paths=[""] * sel.sum(),
                                  truth=y[sel], prediction=pred[sel])
    run.write_json("run.json", {"labels": ["A", "B", "C", "D"], "tolerated_pairs": [["A", "B"]],
                                "methods": {"a": {}, "b": {}, "c": {}},
                                "splits": {"cv": {"kind": "kfold", "n_folds": 5}}})
    rows = paired_comparisons(run, "cv", n_boot=200)
    assert [(r["method_a"], r["method_b"]) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]
    r = rows[0]
    assert r["n_images"] == 300 and r["n_folds"] == 5
    assert r["balanced_accuracy_a"] == pytest.approx(skm.balanced_accuracy_score(y, pa))
    assert r["balanced_accuracy_b"] == pytest.approx(skm.balanced_accuracy_score(y, pb))
    # the CI: the plain bootstrap of the pooled images (stored in image order)
    ref_boot = reference_bootstrap(y, pa, pb, n_boot=200, confidence=0.95, seed=0)
    assert (r["diff"], r["ci_low"], r["ci_high"]) == pytest.approx(ref_boot, abs=1e-12)
    b = int(np.sum((y == pa) & (y != pb)))
    c = int(np.sum((y != pa) & (y == pb)))
    assert (r["mcnemar_b"], r["mcnemar_c"]) == (b, c) and b + c >= 25  # the chi-square branch
    assert r["mcnemar_p"] == pytest.approx(sps.chi2.sf((abs(b - c) - 1) ** 2 / (b + c), 1))
    fa = [skm.balanced_accuracy_score(y[folds == k], pa[folds == k]) for k in range(5)]
    fb = [skm.balanced_accuracy_score(y[folds == k], pb[folds == k]) for k in range(5)]
    d = np.subtract(fa, fb)
    assert r["fold_mean_diff"] == pytest.approx(d.mean()) and r["fold_sd_diff"] == pytest.approx(d.std(ddof=1))
    assert r["ttest_p"] == pytest.approx(sps.ttest_rel(fa, fb).pvalue)
    assert r["wilcoxon_p"] == pytest.approx(sps.wilcoxon(fa, fb).pvalue)
    np.testing.assert_allclose([x["mcnemar_p_holm"] for x in rows], holm([x["mcnemar_p"] for x in rows]))
    np.testing.assert_allclose([x["ttest_p_holm"] for x in rows], holm([x["ttest_p"] for x in rows]))
    tol = paired_comparisons(run, "cv", n_boot=100, tolerant=True)
    pairs = {frozenset(("A", "B"))}
    assert tol[0]["balanced_accuracy_a"] == pytest.approx(_tolerant_ba(y, pa, pairs))
    assert tol[0]["balanced_accuracy_a"] > r["balanced_accuracy_a"]
    ref_tol = reference_bootstrap(y, pa, pb, n_boot=100, confidence=0.95, seed=0, pairs=pairs)
    assert (tol[0]["diff"], tol[0]["ci_low"], tol[0]["ci_high"]) == pytest.approx(ref_tol, abs=1e-12)
    ok = lambda p: np.array([t == q or {t, q} == {"A", "B"} for t, q in zip(y, p, strict=True)])  # noqa: E731
    assert (tol[0]["mcnemar_b"], tol[0]["mcnemar_c"]) == (int(np.sum(ok(pa) & ~ok(pb))), int(np.sum(~ok(pa) & ok(pb))))
    assert paired_comparisons(run, "missing") == []


def test_compare_methods_aligns_by_image_index() -> None:
    # b lists its rows in another order and lacks image 3; c has no predictions and is left out
    y = np.array(["A", "A", "B", "B", "A", "B"])
    pa = np.array(["A", "B", "B", "B", "A", "A"])
    pb = np.array(["A", "A", "A", "B", "B", "B"])
    order = np.array([5, 4, 2, 1, 0])
    a = MethodPredictions(np.arange(6), np.zeros(6, dtype=int), y, pa)
    b = MethodPredictions(order, np.zeros(5, dtype=int), y[order], pb[order])
    none = MethodPredictions(np.array([], dtype=int), np.array([], dtype=int), np.array([], dtype=str),
                             np.array([], dtype=str))
    (row,) = compare_methods({"a": a, "c": none, "b": b}, n_boot=20)
    keep = np.array([0, 1, 2, 4, 5])
    assert (row["method_a"], row["method_b"], row["n_images"], row["n_folds"]) == ("a", "b", 5, 1)
    assert row["balanced_accuracy_a"] == pytest.approx(skm.balanced_accuracy_score(y[keep], pa[keep]))
    assert row["balanced_accuracy_b"] == pytest.approx(skm.balanced_accuracy_score(y[keep], pb[keep]))
    ref = mcnemar(y[keep] == pa[keep], y[keep] == pb[keep])
    assert (row["mcnemar_b"], row["mcnemar_c"], row["mcnemar_p"]) == (ref.b, ref.c, ref.p_value)
    wrong_truth = MethodPredictions(order, np.zeros(5, dtype=int), np.where(y[order] == "A", "B", "A"), pb[order])
    with pytest.raises(ValueError, match="disagree on the truth"):
        compare_methods({"a": a, "b": wrong_truth}, n_boot=5)


def test_compare_methods_says_how_many_images_one_method_was_tested_on_alone() -> None:
    # issue 8.3: a method that skipped cells (their features failed) is paired on the shared images only
    y = np.array(["A", "B", "A", "B", "A", "B"])
    a = MethodPredictions(np.arange(6), np.zeros(6, dtype=int), y, y)
    keep = np.array([1, 2, 3, 5])
    b = MethodPredictions(keep, np.zeros(4, dtype=int), y[keep], np.full(4, "A"))
    (row,) = compare_methods({"a": a, "b": b}, n_boot=20)
    assert (row["n_images"], row["n_only_a"], row["n_only_b"]) == (4, 2, 0)
    assert row["balanced_accuracy_b"] == pytest.approx(skm.balanced_accuracy_score(y[keep], np.full(4, "A")))
    assert set(row) == set(PAIRED_COLUMNS)


def test_overall_mcnemar_matches_statsmodels() -> None:
    """stats.mcnemar against statsmodels: exact below 25 discordant images, chi-square with
    continuity correction from 25 on."""
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    from cytocompare.stats import mcnemar as cc_mcnemar

    for both, b, c, neither in ((10, 7, 1, 5), (40, 20, 8, 12), (3, 30, 10, 0)):
        a = np.array([1] * both + [1] * b + [0] * c + [0] * neither, bool)
        bb = np.array([1] * both + [0] * b + [1] * c + [0] * neither, bool)
        table = [[both, b], [c, neither]]
        ref = sm_mcnemar(table, exact=b + c < 25, correction=True).pvalue
        assert cc_mcnemar(a, bb).p_value == pytest.approx(ref)
