"""Metrics against scikit-learn (strict) and a loop-based reference of the definitions (tolerant)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from cytocompare.classes import matek2021
from cytocompare.metrics import (
    ExternalEvaluator,
    PrecisionRecallEvaluator,
    SummaryEvaluator,
    balanced_accuracy,
    confusion_matrix,
    per_class_precision_recall,
    summary_metrics,
)
from cytocompare.protocols import EvaluationContext
from cytocompare.tolerance import ToleranceMap

LABELS = ["BLA", "PMO", "MYB", "MMZ", "LYT", "LYI", "EOS", "ABE"]
PAIRS = [("BLA", "PMO"), ("PMO", "MYB"), ("MYB", "MMZ"), ("LYT", "LYI")]


def random_case(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Random labels where ABE is never present in y_true and EOS is never predicted."""
    rng = np.random.default_rng(seed)
    truth_pool = [c for c in LABELS if c != "ABE"]
    pred_pool = [c for c in LABELS if c != "EOS"]
    weights = np.linspace(1, 3, len(truth_pool))  # unequal class sizes so weighted != macro
    y_true = rng.choice(truth_pool, size=n, p=weights / weights.sum())
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.choice(pred_pool, size=n))
    y_pred[y_pred == "EOS"] = "BLA"
    return y_true, y_pred


SEEDS = [0, 1, 2, 3, 7]

# ABE is predicted but never true on purpose; sklearn warns about it
pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")


# ------------------------------------------------------------------ strict vs scikit-learn
@pytest.mark.parametrize("seed", SEEDS)
def test_strict_per_class_matches_sklearn(seed: int) -> None:
    y_true, y_pred = random_case(seed)
    assert "ABE" not in y_true and "EOS" not in y_pred
    res = per_class_precision_recall(y_true, y_pred, LABELS)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=LABELS, zero_division=0)
    np.testing.assert_allclose(res["precision"], p)
    np.testing.assert_allclose(res["recall"], r)
    np.testing.assert_allclose(res["f1"], f)
    np.testing.assert_array_equal(res["support"], s)


@pytest.mark.parametrize("seed", SEEDS)
def test_summary_matches_sklearn(seed: int) -> None:
    y_true, y_pred = random_case(seed)
    s = summary_metrics(y_true, y_pred, LABELS)
    assert s["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert s["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert s["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, labels=LABELS, average="macro", zero_division=0))
    assert s["weighted_f1"] == pytest.approx(
        skm.f1_score(y_true, y_pred, labels=LABELS, average="weighted", zero_division=0))


def test_balanced_accuracy_ignores_only_predicted_classes() -> None:
    y_true = np.array(["A", "A", "B", "B"])
    y_pred = np.array(["A", "C", "B", "B"])
    with pytest.warns(UserWarning):  # sklearn warns about the predicted-only class
        expected = skm.balanced_accuracy_score(y_true, y_pred)
    assert balanced_accuracy(y_true, y_pred) == pytest.approx(expected) == pytest.approx(0.75)


@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_matrix_matches_sklearn(seed: int) -> None:
    y_true, y_pred = random_case(seed)
    cm = confusion_matrix(y_true, y_pred, LABELS)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y_true, y_pred, labels=LABELS))
    norm = confusion_matrix(y_true, y_pred, LABELS, normalize="true")
    # sklearn gives NaN rows for absent classes (ABE); ours are zeros
    ref = np.nan_to_num(skm.confusion_matrix(y_true, y_pred, labels=LABELS, normalize="true"))
    np.testing.assert_allclose(norm, ref)
    assert np.all(norm[LABELS.index("ABE")] == 0) and not np.isnan(norm).any()


def test_confusion_matrix_separate_columns() -> None:
    cm = confusion_matrix(["A", "A", "B"], ["A", "ART", "ART"], ["A", "B"], pred_labels=["A", "B", "ART"])
    np.testing.assert_array_equal(cm, [[1, 0, 1], [0, 0, 1]])


def test_zero_division_nan() -> None:
    res = per_class_precision_recall(["A", "A"], ["A", "A"], ["A", "B"], zero_division=np.nan)
    assert res["precision"][0] == 1 and np.isnan(res["precision"][1]) and np.isnan(res["recall"][1])
    assert np.isnan(res["f1"][1])
    res0 = per_class_precision_recall(["A", "A"], ["A", "A"], ["A", "B"])
    assert res0["precision"][1] == 0 and res0["recall"][1] == 0 and res0["f1"][1] == 0


# ------------------------------------------------------------------ tolerant
def reference_tolerant(y_true, y_pred, labels, pairs):
    """Direct loop implementation of the tolerant definitions in docs/metrics.md."""
    ok = {frozenset(p) for p in pairs}

    def partner(a, b):
        return a == b or frozenset((a, b)) in ok

    prec, rec = [], []
    for c in labels:
        of_c = [(t, p) for t, p in zip(y_true, y_pred) if t == c]
        called_c = [(t, p) for t, p in zip(y_true, y_pred) if p == c]
        rec.append(sum(partner(c, p) for _, p in of_c) / len(of_c) if of_c else 0.0)
        prec.append(sum(partner(c, t) for t, _ in called_c) / len(called_c) if called_c else 0.0)
    return np.array(prec), np.array(rec)


@pytest.mark.parametrize("seed", SEEDS)
def test_tolerant_matches_reference(seed: int) -> None:
    y_true, y_pred = random_case(seed)
    res = per_class_precision_recall(y_true, y_pred, LABELS, tolerance=ToleranceMap(PAIRS))
    p, r = reference_tolerant(y_true.tolist(), y_pred.tolist(), LABELS, PAIRS)
    np.testing.assert_allclose(res["precision"], p)
    np.testing.assert_allclose(res["recall"], r)
    f_ref = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0)
    np.testing.assert_allclose(res["f1"], f_ref)
    present = [c for c in LABELS if c in set(y_true)]
    tm = ToleranceMap(PAIRS)
    s = summary_metrics(y_true, y_pred, LABELS, tolerance=tm)
    assert s["accuracy"] == pytest.approx(np.mean(tm.correct(y_true, y_pred)))
    assert s["balanced_accuracy"] == pytest.approx(np.mean([r[LABELS.index(c)] for c in present]))
    assert s["macro_f1"] == pytest.approx(np.mean(f_ref))


def test_tolerant_hand_computed() -> None:
    # BLA–PMO and PMO–MYB tolerated, not BLA–MYB (no transitivity)
    y_true = ["BLA", "BLA", "BLA", "PMO", "PMO", "MYB", "LYT"]
    y_pred = ["BLA", "PMO", "MYB", "BLA", "MYB", "PMO", "PMO"]
    res = per_class_precision_recall(y_true, y_pred, ["BLA", "PMO", "MYB", "LYT"],
                                     tolerance=[("BLA", "PMO"), ("PMO", "MYB")])
    # recall: BLA 2/3 (BLA, PMO ok; MYB not), PMO 2/2, MYB 1/1, LYT 0/1
    np.testing.assert_allclose(res["recall"], [2 / 3, 1, 1, 0])
    # precision: called BLA = {BLA, PMO} -> 2/2; called PMO = {BLA, MYB, LYT} -> 2/3;
    # called MYB = {BLA, PMO} -> 1/2; LYT never called -> 0
    np.testing.assert_allclose(res["precision"], [1, 2 / 3, 1 / 2, 0])
    strict = per_class_precision_recall(y_true, y_pred, ["BLA", "PMO", "MYB", "LYT"])
    np.testing.assert_allclose(strict["recall"], [1 / 3, 0, 0, 0])


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_tolerant_equals_strict_without_pairs(seed: int) -> None:
    y_true, y_pred = random_case(seed)
    a = per_class_precision_recall(y_true, y_pred, LABELS)
    b = per_class_precision_recall(y_true, y_pred, LABELS, tolerance=ToleranceMap([]))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert summary_metrics(y_true, y_pred, LABELS) == summary_metrics(y_true, y_pred, LABELS, tolerance=[])


def test_tolerance_map() -> None:
    tm = ToleranceMap([("A", "B"), ("B", "A"), ("B", "C")])
    assert len(tm) == 2 and tm.partners("B") == {"A", "C"} and tm.partners("Z") == frozenset()
    assert tm.is_tolerated("A", "B") and tm.is_tolerated("B", "A") and tm.is_tolerated("A", "A")
    assert not tm.is_tolerated("A", "C")
    np.testing.assert_array_equal(tm.correct(["A", "A", "C"], ["B", "C", "C"]), [True, False, True])
    with pytest.raises(ValueError):
        ToleranceMap([("A", "A")])
    with pytest.raises(ValueError):
        ToleranceMap([("A", "B", "C")])


def test_scheme_tolerance_map() -> None:
    tm = ToleranceMap.from_scheme(matek2021())
    assert len(tm) == 8
    assert tm.partners("LYT") == {"LYI", "HAC"} and tm.partners("PMO") == {"BLA", "MYB"}
    differ = {c for c in matek2021().codes if tm.partners(c)}
    assert len(differ) == 11  # exactly the 11 classes whose strict and tolerant values differ in Table 1
    assert ToleranceMap.from_scheme("matek2021") == tm
    # the scheme file says its map is inferred (reports print it); a scheme without the key publishes its pairs
    assert "Table 1 of Matek et al. 2021" in matek2021().tolerance_inferred_from


def test_scheme_without_inference_note(tmp_path) -> None:
    from cytocompare.classes import load_scheme

    path = tmp_path / "two.yaml"
    path.write_text("name: two\nclasses: [{code: A, name: a, lineage: x}, {code: B, name: b, lineage: x}]\n"
                    "tolerated_pairs: [[A, B]]\n")
    scheme = load_scheme(str(path))
    assert scheme.tolerance_inferred_from == "" and ToleranceMap.from_scheme(scheme).partners("A") == {"B"}


# ------------------------------------------------------------------ evaluators
CTX = EvaluationContext(labels=tuple(LABELS), tolerated_pairs=frozenset(frozenset(p) for p in PAIRS),
                        no_call_classes=frozenset({"ART", "NIF"}))


def test_precision_recall_evaluator() -> None:
    y_true, y_pred = random_case(0)
    rows = PrecisionRecallEvaluator().evaluate(y_true, y_pred, CTX)
    got = {(r.metric, r.cls): r.value for r in rows}
    metrics = {"precision_strict", "recall_strict", "f1_strict", "precision_tolerant", "recall_tolerant",
               "f1_tolerant", "support"}
    assert set(got) == {(m, c) for m in metrics for c in LABELS}
    assert got[("support", "ABE")] == 0 and got[("precision_strict", "EOS")] == 0
    assert got[("recall_strict", "BLA")] == pytest.approx(skm.recall_score(y_true, y_pred, labels=["BLA"],
                                                                            average="micro"))


def test_summary_evaluator() -> None:
    y_true, y_pred = random_case(1)
    got = {r.metric: r.value for r in SummaryEvaluator().evaluate(y_true, y_pred, CTX)}
    assert all(r == "" for r in [x.cls for x in SummaryEvaluator().evaluate(y_true, y_pred, CTX)])
    assert set(got) == {f"{m}_{k}" for m in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")
                        for k in ("strict", "tolerant")}
    assert got["balanced_accuracy_strict"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert got["balanced_accuracy_tolerant"] >= got["balanced_accuracy_strict"]


def test_external_evaluator() -> None:
    # truth has OTH (not a training label); predictions include no-call classes
    y_true = np.array(["BLA", "BLA", "BLA", "PMO", "LYT", "OTH", "OTH"])
    y_pred = np.array(["BLA", "PMO", "ART", "BLA", "NIF", "LYT", "ART"])
    got = {(r.metric, r.cls): r.value for r in ExternalEvaluator().evaluate(y_true, y_pred, CTX)}
    assert got[("coverage", "")] == pytest.approx(4 / 7)
    # called: BLA->BLA, BLA->PMO, PMO->BLA, OTH->LYT
    assert got[("accuracy_called_strict", "")] == pytest.approx(1 / 4)
    assert got[("accuracy_called_tolerant", "")] == pytest.approx(3 / 4)
    assert got[("recall_called", "BLA")] == pytest.approx(1 / 2)
    assert got[("recall_called_tolerant", "BLA")] == pytest.approx(1)
    assert got[("no_call_rate", "BLA")] == pytest.approx(1 / 3)
    assert got[("no_call_rate", "LYT")] == 1 and np.isnan(got[("recall_called", "LYT")])
    assert got[("recall_called", "OTH")] == 0 and got[("n_images", "OTH")] == 2
    assert ("no_call_rate", "MYB") not in got  # absent from the test set


# ---- found by a mutation pass (mutmut) on metrics.py and tolerance.py: each kills surviving mutants
def test_tolerant_accuracy_against_an_independent_loop() -> None:
    for seed in SEEDS:
        y_true, y_pred = random_case(seed)
        ok = [t == p or {t, p} in [set(q) for q in PAIRS] for t, p in zip(y_true, y_pred)]
        assert summary_metrics(y_true, y_pred, LABELS, tolerance=PAIRS)["accuracy"] == pytest.approx(np.mean(ok))


def test_evaluator_tolerant_rows_use_the_tolerance() -> None:
    y_true, y_pred = random_case(0)
    got = {(r.metric, r.cls): r.value for r in PrecisionRecallEvaluator().evaluate(y_true, y_pred, CTX)}
    ref = per_class_precision_recall(y_true, y_pred, LABELS, tolerance=ToleranceMap(PAIRS))
    assert [got[("recall_tolerant", c)] for c in LABELS] == pytest.approx(list(ref["recall"]))
    s = {r.metric: r.value for r in SummaryEvaluator().evaluate(y_true, y_pred, CTX)}
    assert s["accuracy_tolerant"] == pytest.approx(summary_metrics(y_true, y_pred, LABELS, PAIRS)["accuracy"])


def test_label_neither_true_nor_predicted_counts_zero() -> None:
    y_true, y_pred = random_case(2)
    labels = LABELS + ["NIF"]
    got = summary_metrics(y_true, y_pred, labels)
    assert got["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
