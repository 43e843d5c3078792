"""Per-class paired statistics (issue 11.3): recall differences with paired bootstrap CIs, exact
McNemar per class, Holm across classes; checked against scipy/statsmodels and hand-worked values."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from cytocompare.evaluation import paired_comparisons, paired_per_class, pooled_predictions
from cytocompare.reports.paired import PairedStatsReporter, describe_per_class
from cytocompare.rundir import RunDir
from cytocompare.stats import (
    PAIRED_COLUMNS,
    PAIRED_PER_CLASS_COLUMNS,
    MethodPredictions,
    compare_methods_per_class,
    holm,
    holm_adjust,
    mcnemar,
    mcnemar_exact,
    newcombe_paired_ci,
    per_class_pair,
    recall_diff_ci,
)
from cytocompare.tolerance import ToleranceMap


# ------------------------------------------------------------------ the bootstrap
def _numpy_paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """Independent reference: resample indices, the same for both, percentile interval."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (n_boot, len(a)))
    d = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    lo, hi = np.quantile(d, [0.025, 0.975])
    return float(lo), float(hi)


def test_recall_diff_ci_is_scipys_paired_percentile_bootstrap() -> None:
    rng = np.random.default_rng(3)
    a = rng.random(40) < 0.8
    b = rng.random(40) < 0.55
    res = recall_diff_ci(a, b, n_boot=999, seed=7)
    assert res.diff == pytest.approx(a.mean() - b.mean())
    ref = sps.bootstrap((a.astype(float), b.astype(float)), lambda x, y, axis: x.mean(axis) - y.mean(axis),
                        paired=True, vectorized=True, n_resamples=999, method="percentile",
                        rng=np.random.default_rng(7)).confidence_interval
    assert (res.low, res.high) == pytest.approx((ref.low, ref.high))
    # and it agrees with a hand-written numpy paired bootstrap up to Monte-Carlo error
    big = recall_diff_ci(a, b, n_boot=20000, seed=1)
    lo, hi = _numpy_paired_bootstrap(a.astype(float), b.astype(float), 20000, 2)
    assert big.low == pytest.approx(lo, abs=0.03) and big.high == pytest.approx(hi, abs=0.03)
    assert big.low < big.diff < big.high
    # seeded: the same seed, the same interval
    assert recall_diff_ci(a, b, n_boot=999, seed=7) == res


def test_recall_diff_ci_hand_worked_edge_cases() -> None:
    ones, zeros = np.ones(8, bool), np.zeros(8, bool)
    assert tuple(recall_diff_ci(ones, zeros)) == (1.0, 1.0, 1.0)  # every resample: 1 − 0
    same = np.array([1, 0, 1, 1, 0, 1, 0, 1], bool)
    assert tuple(recall_diff_ci(same, same)) == (0.0, 0.0, 0.0)  # identical calls: no difference
    one = recall_diff_ci([True], [False])  # one image: a difference but no interval
    assert one.diff == 1.0 and np.isnan(one.low) and np.isnan(one.high)
    assert all(np.isnan(v) for v in recall_diff_ci([], []))
    with pytest.raises(ValueError, match="same length"):
        recall_diff_ci([True, False], [True])


# ------------------------------------------------------------------ Newcombe
def _paired(e: int, f: int, g: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness from a paired 2x2 table: both right e, only a f, only b g, neither h."""
    a = np.array([1] * e + [1] * f + [0] * g + [0] * h, bool)
    b = np.array([1] * e + [0] * f + [1] * g + [0] * h, bool)
    return a, b


def test_newcombe_paired_ci_published_value() -> None:
    # Fagerland, Lydersen & Laake (2017), ch. 8, Cavo et al. (2012): table [[59, 6], [16, 80]],
    # Newcombe square-and-add: -0.0621 (95% CI -0.1186 to -0.0046)
    low, high = newcombe_paired_ci(*_paired(59, 6, 16, 80))
    assert (low, high) == pytest.approx((-0.1186, -0.0046), abs=1e-4)
    # swapping the methods mirrors the interval
    assert newcombe_paired_ci(*_paired(59, 16, 6, 80)) == pytest.approx((0.0046, 0.1186), abs=1e-4)
    # identical calls (f = g = 0, phi from A = e*h > n/2): symmetric around 0
    lo0, hi0 = newcombe_paired_ci(*_paired(10, 0, 0, 10))
    assert lo0 == pytest.approx(-hi0) and 0 < hi0 < 0.2
    assert all(np.isnan(newcombe_paired_ci([], [])))


# ------------------------------------------------------------------ McNemar and Holm
def test_mcnemar_exact_hand_worked_and_against_scipy() -> None:
    # b = 7 images only a right, c = 1 only b right: p = 2 * P(X <= 1 | 8, 1/2) = 2 * 9/256
    a = np.array([1] * 7 + [0] + [1] * 5 + [0] * 3, bool)
    b = np.array([0] * 7 + [1] + [1] * 5 + [0] * 3, bool)
    res = mcnemar_exact(a, b)
    assert (res.b, res.c) == (7, 1) and res.p_value == pytest.approx(18 / 256)
    assert res.p_value == pytest.approx(sps.binomtest(7, 8, 0.5).pvalue)
    assert res == mcnemar(a, b)  # below 25 discordant images the overall test is the exact one too
    assert mcnemar_exact(a, a) == (0, 0, 1.0)
    # exact even with many discordant images (the overall test switches to chi-square there)
    big_a = np.array([1] * 30 + [0] * 10, bool)
    big_b = ~big_a
    assert mcnemar_exact(big_a, big_b).p_value == pytest.approx(sps.binomtest(30, 40, 0.5).pvalue)


def test_holm_adjust_is_statsmodels_and_matches_the_hand_written_holm() -> None:
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 3p, 2p, p then running max
    p = [0.2, np.nan, 0.001, 0.04, 0.9, 0.011]
    np.testing.assert_allclose(holm_adjust(p), holm(p), equal_nan=True)
    assert np.isnan(holm_adjust([np.nan])).all()


# ------------------------------------------------------------------ rows
def test_per_class_pair_hand_worked() -> None:
    truth = np.array(["EOS"] * 10 + ["LYT"] * 4)
    ok_a = np.array([1] * 10 + [1, 1, 0, 0], bool)
    ok_b = np.array([0] * 8 + [1, 1] + [1, 1, 1, 0], bool)
    rows = per_class_pair(truth, ok_a, ok_b, ["LYT", "EOS", "MYB"], n_boot=500)
    assert [r["class"] for r in rows] == ["LYT", "EOS"]  # given order; a class with no image is left out
    lyt, eos = rows
    assert (eos["n"], eos["recall_a"], eos["recall_b"], eos["diff"]) == (10, 1.0, 0.2, pytest.approx(0.8))
    assert (eos["mcnemar_b"], eos["mcnemar_c"]) == (8, 0)
    assert eos["p"] == pytest.approx(2 / 2**8)
    assert (lyt["mcnemar_b"], lyt["mcnemar_c"], lyt["p"]) == (0, 1, 1.0)
    assert eos["p_holm"] == pytest.approx(min(1, 2 * 2 / 2**8)) and lyt["p_holm"] == 1.0
    assert eos["ci_low"] <= 0.8 <= eos["ci_high"] and eos["ci_high"] == pytest.approx(1.0)
    assert (eos["newcombe_low"], eos["newcombe_high"]) == pytest.approx(newcombe_paired_ci(ok_a[:10], ok_b[:10]))
    assert eos["newcombe_low"] < 0.8 < eos["newcombe_high"]
    assert set(PAIRED_PER_CLASS_COLUMNS) - {"method_a", "method_b"} == set(eos)


def _mp(images, truth, pred, folds=None) -> MethodPredictions:
    images = np.asarray(images, dtype=np.int64)
    return MethodPredictions(images, np.zeros(len(images), np.int64) if folds is None else np.asarray(folds),
                             np.asarray(truth, dtype=str), np.asarray(pred, dtype=str))


def test_compare_methods_per_class_pairs_only_shared_images_and_honours_tolerance() -> None:
    truth = ["A", "A", "A", "B", "B", "B"]
    m1 = _mp([0, 1, 2, 3, 4, 5], truth, ["A", "A", "A", "B", "B", "B"])
    # m2 was not tested on image 0; rows in another order: alignment is by image index
    m2 = _mp([5, 4, 3, 2, 1], ["B", "B", "B", "A", "A"], ["A", "B", "A", "A", "B"])
    rows = compare_methods_per_class({"m1": m1, "m2": m2, "empty": _mp([], [], [])}, classes=["B", "A"], n_boot=200)
    assert [(r["method_a"], r["method_b"], r["class"], r["n"]) for r in rows] == [
        ("m1", "m2", "B", 3), ("m1", "m2", "A", 2)]
    b, a = rows
    assert (b["recall_a"], b["recall_b"], b["mcnemar_b"], b["mcnemar_c"]) == (1.0, pytest.approx(1 / 3), 2, 0)
    assert (a["recall_a"], a["recall_b"], a["mcnemar_b"]) == (1.0, 0.5, 1)
    tol = compare_methods_per_class({"m1": m1, "m2": m2}, n_boot=200, tolerance=ToleranceMap([("A", "B")]))
    assert [r["recall_b"] for r in tol] == [1.0, 1.0]  # A<->B tolerated: every call counts
    bad = _mp([1], ["B"], ["B"])
    with pytest.raises(ValueError, match="disagree on the truth"):
        compare_methods_per_class({"m1": m1, "bad": bad})


# ------------------------------------------------------------------ words
def test_describe_per_class_words() -> None:
    row = {"method_a": "colour-logreg", "method_b": "classical", "class": "EOS", "n": 40, "recall_a": 0.7,
           "recall_b": 0.82, "diff": -0.12, "ci_low": -0.19, "ci_high": -0.05, "mcnemar_b": 1, "mcnemar_c": 6,
           "p": 0.001, "p_holm": 0.003}
    assert describe_per_class(row, {"EOS": "Eosinophil"}) == (
        "classical beats colour-logreg on EOS (Eosinophil) by 0.12 [0.05, 0.19], Holm p = 0.003 (n = 40)")
    assert describe_per_class(row | {"p_holm": 0.2}) == (
        "classical is ahead of colour-logreg on EOS by 0.12 [0.05, 0.19], not a clear difference "
        "(Holm p = 0.200, n = 40)")
    tie = row | {"diff": 0.0, "recall_b": 0.7, "p_holm": 1.0}
    assert describe_per_class(tie) == "colour-logreg and classical do equally well on EOS (recall 0.70; Holm p = 1.000, n = 40)"


# ------------------------------------------------------------------ the run directory and the reporter
def _run(path: Path) -> RunDir:
    """Two methods on a 2-fold split: ref always right, weak wrong on most EOS cells."""
    run = RunDir(path)
    truth = np.array(["EOS"] * 12 + ["LYT"] * 12)
    pred = {"ref": truth.copy(), "weak": truth.copy()}
    pred["weak"][:10] = "LYT"
    pred["weak"][12] = "EOS"
    idx = np.arange(24)
    for method, p in pred.items():
        for k in (0, 1):
            sel = idx[idx % 2 == k]
            run.write_predictions(method, "cv", k, images=sel, paths=[f"{i}.png" for i in sel], truth=truth[sel],
                                  prediction=p[sel])
    run.write_json("run.json", {"labels": ["LYT", "EOS"], "tolerated_pairs": [], "no_call_classes": [],
                                "class_names": {"EOS": "Eosinophil", "LYT": "Lymphocyte"},
                                "methods": {"ref": {}, "weak": {}},
                                "splits": {"cv": {"kind": "kfold", "n_folds": 2}}})
    return run


def test_paired_per_class_reads_the_pooled_predictions_in_display_order(tmp_path: Path) -> None:
    run = _run(tmp_path)
    rows = paired_per_class(run, "cv", n_boot=300)
    pooled = {m: pooled_predictions(run, m, "cv") for m in ("ref", "weak")}
    assert rows == compare_methods_per_class(pooled, classes=["LYT", "EOS"], n_boot=300)
    assert [r["class"] for r in rows] == ["LYT", "EOS"]  # run.json labels order
    eos = rows[1]
    assert (eos["mcnemar_b"], eos["mcnemar_c"], eos["diff"]) == (10, 0, pytest.approx(10 / 12))
    assert eos["p"] == pytest.approx(sps.binomtest(10, 10, 0.5).pvalue)
    assert eos["p_holm"] == pytest.approx(2 * eos["p"])  # two classes


def test_reporter_writes_the_per_class_table_and_keeps_the_overall_one(tmp_path: Path) -> None:
    from cytocompare.plugins import get_registry

    run = _run(tmp_path)
    assert type(get_registry().create("reporter", "paired-stats")) is PairedStatsReporter
    paths = PairedStatsReporter(n_boot=300).report(run.path)
    assert run.path / "metrics" / "paired_per_class_cv.csv" in paths
    with open(run.path / "metrics" / "paired_cv.csv", newline="") as fh:
        overall = list(csv.reader(fh))
    assert overall[0] == ["criterion"] + PAIRED_COLUMNS  # unchanged columns
    assert len(overall) == 3  # strict and tolerant
    assert float(overall[1][PAIRED_COLUMNS.index("diff") + 1]) == pytest.approx(
        paired_comparisons(run, "cv", n_boot=300)[0]["diff"])
    with open(run.path / "metrics" / "paired_per_class_cv.csv", newline="") as fh:
        per_class = list(csv.DictReader(fh))
    assert list(per_class[0]) == ["criterion"] + PAIRED_PER_CLASS_COLUMNS
    assert [(r["criterion"], r["class"]) for r in per_class] == [
        ("strict", "LYT"), ("strict", "EOS"), ("tolerant", "LYT"), ("tolerant", "EOS")]
    eos = per_class[1]
    assert (eos["method_a"], eos["method_b"], eos["n"], eos["mcnemar_b"], eos["mcnemar_c"]) == (
        "ref", "weak", "12", "10", "0")
    assert float(eos["p_holm"]) == pytest.approx(2 * 2 / 2**10)
    md = (run.path / "paired_cv.md").read_text()
    assert "## Per class" in md
    lo, hi = float(eos["ci_low"]), float(eos["ci_high"])
    assert f"ref beats weak on EOS (Eosinophil) by 0.83 [{lo:.2f}, {hi:.2f}], Holm p = 0.004 (n = 12)" in md
    assert "| ref | weak | LYT (Lymphocyte) | 12 |" in md
    assert "[metrics/paired_per_class_cv.csv](metrics/paired_per_class_cv.csv)" in md


def test_reporter_names_the_largest_difference_when_none_is_clear(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    truth = np.array(["EOS"] * 4 + ["LYT"] * 4)
    preds = {"ref": truth.copy(), "weak": truth.copy()}
    preds["weak"][:2] = "LYT"  # 2 of 4 EOS wrong: exact p = 0.5, no clear difference
    preds["weak"][4] = "EOS"
    for m, p in preds.items():
        run.write_predictions(m, "ho", 0, images=np.arange(8), paths=[f"{i}.png" for i in range(8)], truth=truth,
                              prediction=p)
    run.write_json("run.json", {"labels": ["EOS", "LYT"], "tolerated_pairs": [], "no_call_classes": [],
                                "methods": {"ref": {}, "weak": {}}, "splits": {"ho": {"kind": "holdout", "n_folds": 1}}})
    PairedStatsReporter(n_boot=200).report(run.path)
    md = (run.path / "paired_ho.md").read_text()
    assert "No class differs clearly" in md
    assert "The largest difference: ref is ahead of weak on EOS" in md and "by 0.50" in md
    assert "not a clear difference (Holm p = 1.000, n = 4)" in md  # p = 0.5, Holm over 2 classes: 1.0


def test_a_row_read_back_from_the_csv_without_an_interval_is_described():
    """A class without a bootstrap interval is "" in the CSV (the HTML page reads the CSV back):
    the sentence says so instead of failing on float("")."""
    from cytocompare.reports.paired import describe_per_class

    row = {"class": "BLA", "method_a": "a", "method_b": "b", "n": "1", "criterion": "strict",
           "recall_a": "1.0", "recall_b": "0.0", "diff": "1.0", "ci_low": "", "ci_high": "",
           "p": "", "p_holm": ""}
    text = describe_per_class(row, {"BLA": "blast"})
    assert text == "a is ahead of b on BLA (blast) by 1.00 [no interval], not a clear difference (Holm p = –, n = 1)"
