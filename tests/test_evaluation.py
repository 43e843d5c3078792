"""The evaluation layer: one path for ``run`` and ``report``, declared rules, pooling, pure maths modules."""

from __future__ import annotations

import re

import ast
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import cytocompare.metrics
import cytocompare.reports
import cytocompare.stats
from cytocompare.evaluation import (
    DEFAULT_EVALUATORS,
    DEFAULT_REPORTERS,
    evaluate_and_report,
    evaluate_run,
    evaluates_split,
    pooled_predictions,
    runs_last,
)
from cytocompare.metrics import ExternalEvaluator, SummaryEvaluator
from cytocompare.protocols import MetricRow
from cytocompare.reports.html import HtmlReporter
from cytocompare.rundir import RunDir


def _small_run(path: Path, info: dict | None = None) -> RunDir:
    """Two methods, a 2-fold split and an external split."""
    run = RunDir(path)
    truth = np.array(["A", "B", "A", "B", "A", "B"])
    for method, pred in (("m1", truth), ("m2", np.array(["A", "B", "A", "B", "B", "B"]))):
        for k, idx in enumerate((np.array([0, 2, 4]), np.array([1, 3, 5]))):
            run.write_predictions(method, "cv", k, images=idx, paths=[f"{i}.png" for i in idx], truth=truth[idx],
                                  prediction=pred[idx])
        run.write_predictions(method, "ext", 0, images=[0, 1], paths=["x", "y"], truth=["A", "B"],
                              prediction=["A", "N"])
    run.write_json("run.json", {"labels": ["A", "B"], "tolerated_pairs": [], "no_call_classes": ["N"],
                                "methods": {"m1": {}, "m2": {}},
                                "splits": {"cv": {"kind": "kfold", "n_folds": 2},
                                           "ext": {"kind": "external", "n_folds": 1}}} | (info or {}))
    return run


class _Recorder:
    """A reporter that records the order it ran in."""

    runs_last: ClassVar[bool] = False
    calls: ClassVar[list[str]] = []

    def __init__(self, name: str) -> None:
        self.name = name

    def report(self, run_dir: Path) -> list[Path]:
        _Recorder.calls.append(self.name)
        path = Path(run_dir) / f"{self.name}.txt"
        path.write_text(self.name)
        return [path]


class _LastRecorder(_Recorder):
    runs_last = True


class _KfoldOnly:
    split_kinds: ClassVar[frozenset[str]] = frozenset({"kfold"})

    def evaluate(self, y_true, y_pred, context):
        return [MetricRow("n", "", float(len(y_true)))]


class _Everywhere:
    def evaluate(self, y_true, y_pred, context):
        return [MetricRow("m", "", 1.0)]


# ------------------------------------------------------------------ declared rules, not names
def test_split_kinds_rule_is_declared_by_the_evaluator(tmp_path: Path) -> None:
    run = _small_run(tmp_path)
    # "external" as a *name* means nothing: an evaluator without split_kinds runs on every split
    evaluate_run(run, {"external": _Everywhere(), "counts": _KfoldOnly()})
    rows = run.read_csv("metrics/long.csv")
    assert {r["split"] for r in rows if r["metric"] == "m"} == {"cv", "ext"}
    assert {r["split"] for r in rows if r["metric"] == "n"} == {"cv"}
    assert evaluates_split(ExternalEvaluator(), "external") and not evaluates_split(ExternalEvaluator(), "kfold")
    assert evaluates_split(SummaryEvaluator(), "external") and evaluates_split(SummaryEvaluator(), "holdout")


def test_runs_last_is_declared_by_the_reporter(tmp_path: Path) -> None:
    run = _small_run(tmp_path)
    assert runs_last(HtmlReporter()) and not runs_last(_Recorder("x"))
    _Recorder.calls = []
    lines: list[str] = []
    written = evaluate_and_report(run, ["summary"], [_LastRecorder("index"), _Recorder("a"), _Recorder("b")],
                                  log=lines.append)
    assert _Recorder.calls == ["a", "b", "index"]  # declared order, the runs_last one after the others
    assert written == [run.path / "a.txt", run.path / "b.txt", run.path / "index.txt"]
    assert lines == ["[report] _Recorder: a.txt", "[report] _Recorder: b.txt", "[report] _LastRecorder: index.txt"]
    assert {r["metric"] for r in run.read_csv("metrics/long.csv")} == {
        f"{m}_{k}" for m in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1") for k in ("strict", "tolerant")}


# ------------------------------------------------------------------ None = run.json, else the defaults
class _Registry:
    """Stands in for the plugin registry: records what was asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def create(self, kind: str, name: str):
        self.asked.append((kind, name))
        return _Everywhere() if kind == "evaluator" else _Recorder(name)


def test_names_come_from_run_json_then_the_defaults(tmp_path: Path) -> None:
    recorded = _small_run(tmp_path / "a", {"evaluators": ["e1"], "reporters": ["r1", "r2"]})
    reg = _Registry()
    evaluate_and_report(recorded, None, None, registry=reg)
    assert reg.asked == [("evaluator", "e1"), ("reporter", "r1"), ("reporter", "r2")]

    reg = _Registry()
    evaluate_and_report(recorded, ["e2"], ["r3"], registry=reg)  # given names win over run.json
    assert reg.asked == [("evaluator", "e2"), ("reporter", "r3")]

    reg = _Registry()
    evaluate_and_report(_small_run(tmp_path / "b"), None, None, registry=reg)  # run.json names none
    assert reg.asked == [("evaluator", n) for n in DEFAULT_EVALUATORS] + [("reporter", n) for n in DEFAULT_REPORTERS]

    reg = _Registry()
    assert evaluate_and_report(recorded, None, [], registry=reg) == []  # an empty list runs no reporter
    assert reg.asked == [("evaluator", "e1")]


def test_default_names_have_one_home() -> None:
    assert not hasattr(cytocompare.metrics, "DEFAULT_EVALUATORS")
    assert not hasattr(cytocompare.reports, "DEFAULT_REPORTERS")
    assert DEFAULT_REPORTERS[-1] == "html"  # the reporter that links the others', listed last too


def test_defaults_from_the_registry_write_every_metric(tmp_path: Path) -> None:
    run = _small_run(tmp_path)
    evaluate_run(run)  # the defaults, built from the installed plugins
    rows = run.read_csv("metrics/long.csv")
    assert {"recall_tolerant", "balanced_accuracy_strict"} <= {r["metric"] for r in rows}
    assert {r["split"] for r in rows if r["metric"] == "coverage"} == {"ext"}


# ------------------------------------------------------------------ pooling over folds
def test_pooled_predictions(tmp_path: Path) -> None:
    run = _small_run(tmp_path)
    p = pooled_predictions(run, "m2", "cv")
    assert p.images.tolist() == [0, 2, 4, 1, 3, 5] and p.folds.tolist() == [0, 0, 0, 1, 1, 1]
    assert p.truth.tolist() == ["A", "A", "A", "B", "B", "B"]
    assert p.prediction.tolist() == ["A", "A", "B", "B", "B", "B"]
    empty = pooled_predictions(run, "m2", "nowhere")
    assert len(empty.images) == len(empty.truth) == len(empty.folds) == 0


def test_paired_comparisons_reads_pooled_predictions(tmp_path: Path) -> None:
    from cytocompare.evaluation import paired_comparisons
    from cytocompare.stats import compare_methods

    run = _small_run(tmp_path)
    pooled = {m: pooled_predictions(run, m, "cv") for m in ("m1", "m2")}
    np.testing.assert_equal(paired_comparisons(run, "cv", n_boot=50), compare_methods(pooled, n_boot=50))
    row = paired_comparisons(run, "cv", n_boot=50)[0]
    assert (row["n_images"], row["n_folds"], row["mcnemar_b"], row["mcnemar_c"]) == (6, 2, 1, 0)
    # truths that disagree between methods are an error that names the split
    run.write_predictions("m2", "cv", 0, images=[0, 2, 4], paths=["a", "b", "c"], truth=["B", "A", "A"],
                          prediction=["A", "A", "A"])
    with pytest.raises(ValueError, match="split 'cv'.*disagree on the truth"):
        paired_comparisons(run, "cv", n_boot=10)


# ------------------------------------------------------------------ the maths modules know no files
@pytest.mark.parametrize("module", [cytocompare.metrics, cytocompare.stats])
def test_maths_modules_import_no_registry_and_no_run_directory(module) -> None:
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    core = {m for m in imported if m.startswith("cytocompare")}
    assert core <= {"cytocompare.base", "cytocompare.protocols", "cytocompare.tolerance", "cytocompare.metrics"}
    assert not imported & {"os", "pathlib", "csv", "json", "io"}


# ------------------------------------------------------------------ issue 8.1: the classes each split tested
def _per_split_run(path: Path) -> RunDir:
    """run.json lists BLA and LYT only (NGS was dropped from ``cv`` by ``small_classes: drop``),
    yet the holdout ``ho`` tested NGS; the external set ``ext`` lacks LYT and has OTH."""
    run = RunDir(path)
    cv_truth = np.array(["BLA", "LYT"] * 4)
    cv_pred = np.array(["BLA", "LYT", "BLA", "BLA", "BLA", "LYT", "LYT", "LYT"])
    for k in range(2):
        sel = (np.arange(8) < 4) == (k == 0)
        run.write_predictions("m", "cv", k, images=np.flatnonzero(sel), paths=[""] * 4, truth=cv_truth[sel],
                              prediction=cv_pred[sel])
    run.write_predictions("m", "ho", 0, images=np.arange(6), paths=[""] * 6,
                          truth=["NGS", "BLA", "LYT", "NGS", "BLA", "LYT"],
                          prediction=["NGS", "BLA", "LYT", "BLA", "BLA", "LYT"])
    run.write_predictions("m", "ext", 0, images=np.arange(4), paths=[""] * 4, truth=["BLA", "BLA", "OTH", "NGS"],
                          prediction=["BLA", "LYT", "BLA", "NGS"])
    run.write_json("run.json", {"labels": ["BLA", "LYT"], "tolerated_pairs": [], "no_call_classes": [],
                                "methods": {"m": {}},
                                "splits": {"cv": {"kind": "kfold", "n_folds": 2}, "ho": {"kind": "holdout"},
                                           "ext": {"kind": "external"}}})
    return run


def test_per_class_rows_and_averages_follow_the_classes_each_split_tested(tmp_path: Path) -> None:
    from sklearn import metrics as skm

    from cytocompare.evaluation import context_from_run, split_labels
    from cytocompare.metrics import PrecisionRecallEvaluator

    run = _per_split_run(tmp_path)
    # NGS sits where the class scheme puts it (after LYT in matek2021), OTH too
    assert split_labels(run, "cv") == ["BLA", "LYT"]
    assert split_labels(run, "ho") == ["BLA", "LYT", "NGS"]
    assert split_labels(run, "ext") == ["BLA", "NGS", "OTH"]
    assert context_from_run(run, "ho").labels == ("BLA", "LYT", "NGS") and context_from_run(run).labels == ("BLA", "LYT")
    evaluate_run(run, {"pr": PrecisionRecallEvaluator(), "summary": SummaryEvaluator()})
    rows = run.read_csv("metrics/long.csv")
    for split in ("cv", "ho", "ext"):
        tested = {(int(f), c) for m, s, f in run.completed() if s == split
                  for c in set(run.read_predictions(m, s, f).truth.tolist())}
        got = {(int(r["fold"]), r["class"]) for r in rows if r["split"] == split and r["metric"] == "support"}
        assert got == tested, split
        for fold in {f for f, _ in tested}:
            preds = run.read_predictions("m", split, fold)
            f1 = [float(r["value"]) for r in rows if r["split"] == split and r["fold"] == str(fold)
                  and r["metric"] == "f1_strict"]
            macro = next(float(r["value"]) for r in rows if r["split"] == split and r["fold"] == str(fold)
                         and r["metric"] == "macro_f1_strict")
            # macro-F1 averages the per-class rows printed, and is scikit-learn's over the classes tested
            assert macro == pytest.approx(np.mean(f1))
            assert macro == pytest.approx(skm.f1_score(preds.truth, preds.prediction, average="macro",
                                                       labels=sorted(set(preds.truth)), zero_division=0))
    # the holdout's 3 classes all count: balanced accuracy (1 + 1 + 0.5) / 3, not 2/2 or 2.5/2
    ba = next(float(r["value"]) for r in rows if r["split"] == "ho" and r["metric"] == "balanced_accuracy_strict")
    assert ba == pytest.approx(2.5 / 3)
    js = run.read_json("metrics/metrics.json")
    assert js["labels_by_split"] == {"cv": ["BLA", "LYT"], "ho": ["BLA", "LYT", "NGS"], "ext": ["BLA", "NGS", "OTH"]}
    assert js["labels"] == ["BLA", "LYT", "NGS", "OTH"]


def test_reports_print_the_classes_each_split_tested(tmp_path: Path) -> None:
    from cytocompare.metrics import PrecisionRecallEvaluator
    from cytocompare.reports.tables import Table1Reporter

    run = _per_split_run(tmp_path)
    evaluate_run(run, {"pr": PrecisionRecallEvaluator(), "summary": SummaryEvaluator()})
    Table1Reporter().report(run.path)
    HtmlReporter().report(run.path)

    def classes(split: str) -> list[str]:
        md = (run.path / f"table1_{split}.md").read_text().split("## Summary")[0]
        return [line.split("|")[1].strip() for line in md.splitlines()
                if line.startswith("| ") and "---" not in line and not line.startswith("| Class")]

    assert classes("cv") == ["BLA", "LYT"]
    assert classes("ho") == ["BLA", "LYT", "NGS"]  # NGS dropped from cv only: still a row of ho
    assert classes("ext") == ["BLA", "NGS", "OTH"]  # LYT never tested there: no row
    ngs = next(line for line in (run.path / "table1_ho.md").read_text().splitlines() if line.startswith("| NGS"))
    assert "segmented neutrophil" in ngs.lower() and "| 2 |" in ngs  # the scheme's name, its 2 test images
    html = (run.path / "index.html").read_text()
    # index.html names each tested class with its scheme name: "BLA (blast), LYT (lymphocyte), ..."
    tested = [re.sub(r" \([^)]*\)", "", m) for m in re.findall(r"Classes tested \(\d+\): ([^;<]*)", html)]
    assert "BLA, LYT, NGS" in tested and "BLA, LYT" in tested
