"""Paired statistics: McNemar, fold-wise tests, bootstrap CI, Holm, paired_comparisons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from cytocompare.metrics import balanced_accuracy
from cytocompare.rundir import RunDir
from cytocompare.stats import bootstrap_ci, holm, mcnemar, paired_comparisons, paired_fold_test


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
    assert r["balanced_accuracy_a"] == pytest.approx(balanced_accuracy(y, pa))
    ref = mcnemar(y == pa, y == pb)
    assert (r["mcnemar_b"], r["mcnemar_c"], r["mcnemar_p"]) == (ref.b, ref.c, ref.p_value)
    fa = [balanced_accuracy(y[folds == k], pa[folds == k]) for k in range(5)]
    fb = [balanced_accuracy(y[folds == k], pb[folds == k]) for k in range(5)]
    assert r["ttest_p"] == pytest.approx(sps.ttest_rel(fa, fb).pvalue)
    np.testing.assert_allclose([x["mcnemar_p_holm"] for x in rows], holm([x["mcnemar_p"] for x in rows]))
    tol = paired_comparisons(run, "cv", n_boot=100, tolerant=True)
    assert tol[0]["balanced_accuracy_a"] >= r["balanced_accuracy_a"]
    assert paired_comparisons(run, "missing") == []
