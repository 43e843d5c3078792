"""Reporters on a synthetic run directory (7 classes, 2 methods, 5-fold + external split)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from cytocompare.evaluation import evaluate_and_report, evaluate_run
from cytocompare.metrics import ExternalEvaluator, PrecisionRecallEvaluator, SummaryEvaluator
from cytocompare.reports.charts import ConfusionChartReporter, RecallChartReporter
from cytocompare.reports.html import HtmlReporter
from cytocompare.reports.tables import PairedStatsReporter, Table1Reporter
from cytocompare.rundir import RunDir
from test_stats import reference_bootstrap  # the plain bootstrap (tests/test_stats.py)

LABELS = ["BLA", "PMO", "MYB", "EOS", "LYT", "MON", "NGS"]
NAMES = {"BLA": "blast", "PMO": "promyelocyte", "MYB": "myelocyte", "EOS": "eosinophil",
         "LYT": "lymphocyte", "MON": "monocyte", "NGS": "segmented neutrophil", "ART": "artefact",
         "NIF": "not identifiable"}
COUNTS = {"BLA": 60, "PMO": 40, "MYB": 30, "EOS": 25, "LYT": 80, "MON": 20, "NGS": 5}
METHODS = {"classical": 0.7, "deep": 0.85}
PAIRS = [["BLA", "PMO"], ["PMO", "MYB"]]


def _noisy(rng: np.random.Generator, truth: np.ndarray, acc: float, choices: list[str]) -> np.ndarray:
    pred = truth.copy()
    wrong = rng.random(len(truth)) > acc
    pred[wrong] = rng.choice(choices, size=int(wrong.sum()))
    return pred


def make_synthetic_run(path: Path, seed: int = 0, n_folds: int = 5) -> RunDir:
    """A run directory as the runner would leave it: run.json plus predictions."""
    rng = np.random.default_rng(seed)
    run = RunDir(path)
    truth = np.array([c for c in LABELS for _ in range(COUNTS[c])], dtype=str)
    images = np.arange(len(truth))
    fold_of = np.empty(len(truth), dtype=int)
    for c in LABELS:  # stratified folds
        idx = np.flatnonzero(truth == c)
        fold_of[idx] = rng.permutation(np.arange(len(idx)) % n_folds)
    # external test set: lacks NGS, has an unknown class (OTH), predictions may be ART/NIF
    ext_truth = np.array(["BLA"] * 15 + ["LYT"] * 20 + ["MON"] * 10 + ["OTH"] * 5, dtype=str)
    for mi, (method, acc) in enumerate(METHODS.items()):
        mrng = np.random.default_rng(seed + 100 + mi)
        for k in range(n_folds):
            sel = fold_of == k
            pred = _noisy(mrng, truth[sel], acc, LABELS)
            classes = LABELS
            scores = mrng.dirichlet(np.ones(len(classes)), size=int(sel.sum()))
            run.write_predictions(method, "cv", k, images=images[sel], paths=[f"img/{i}.jpg" for i in images[sel]],
                                  truth=truth[sel], prediction=pred, scores=scores, classes=classes,
                                  info={"fit_seconds": 1.0, "n_train": int((~sel).sum()), "n_test": int(sel.sum())})
        ext_pred = _noisy(mrng, ext_truth, acc - 0.1, LABELS + ["ART", "NIF"])
        run.write_predictions(method, "external", 0, images=np.arange(len(ext_truth)),
                              paths=[f"ext/{i}.jpg" for i in range(len(ext_truth))],
                              truth=ext_truth, prediction=ext_pred, info={})
    run.write_json("run.json", {
        "status": "finished", "protocol_name": "synthetic", "protocol_hash": "abc123",
        "labels": LABELS, "class_names": NAMES, "class_counts": COUNTS,
        "tolerated_pairs": PAIRS, "tolerance_source": "scheme", "no_call_classes": ["ART", "NIF"],
        "methods": {m: {"splits": ["cv", "external"], "components": {}} for m in METHODS},
        "splits": {"cv": {"kind": "kfold", "n_folds": n_folds}, "external": {"kind": "external", "n_folds": 1}},
        "evaluators": ["precision-recall", "summary", "external"],
        "reporters": ["table1", "paired-stats", "recall-chart", "confusion-chart", "html"],
        "started": "2024-01-01T00:00:00", "finished": "2024-01-01T01:00:00", "versions": {"cytocompare": "0.1.0"},
    })
    return run


EVALUATORS = {"precision-recall": PrecisionRecallEvaluator(), "summary": SummaryEvaluator(),
              "external": ExternalEvaluator()}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    run = make_synthetic_run(tmp_path_factory.mktemp("run"))
    evaluate_run(run, EVALUATORS)
    return run


def _png_ok(path: Path, min_size: int = 400) -> None:
    assert path.is_file(), path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_size and im.size[1] >= min_size * 0.6
        assert len(np.unique(np.asarray(im.convert("L")))) > 10  # not a blank canvas


# ------------------------------------------------------------------ run directory
def test_rundir_roundtrip(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.write_predictions("m", "s", 2, images=[3, 1], paths=["a.jpg", "b,c.jpg"], truth=["BLA", "LYT"],
                          prediction=["BLA", "BLA"], scores=np.array([[0.9, 0.1], [0.6, 0.4]]),
                          classes=["BLA", "LYT"], info={"fit_seconds": 0.5})
    assert run.prediction_path("m", "s", 2) == tmp_path / "predictions" / "m" / "s" / "fold-2.csv"
    assert run.has_predictions("m", "s", 2) and not run.has_predictions("m", "s", 0)
    p = run.read_predictions("m", "s", 2)
    assert p.images.tolist() == [3, 1] and p.paths.tolist() == ["a.jpg", "b,c.jpg"]
    assert p.truth.tolist() == ["BLA", "LYT"] and p.prediction.tolist() == ["BLA", "BLA"]
    assert p.classes == ["BLA", "LYT"] and np.allclose(p.scores, [[0.9, 0.1], [0.6, 0.4]])
    assert p.info["fit_seconds"] == 0.5
    assert run.completed() == [("m", "s", 2)]
    # no json = incomplete fold
    run.prediction_path("m", "s", 2).with_suffix(".json").unlink()
    assert run.completed() == [] and not run.has_predictions("m", "s", 2)
    run.write_predictions("m", "s", 0, images=[0], paths=["x"], truth=["A"], prediction=["B"])
    assert run.read_predictions("m", "s", 0).scores is None
    assert not list(tmp_path.rglob("*.tmp"))
    run.write_csv("metrics/x.csv", ["a", "b"], [[1, float("nan")], ["q", 0.5]])
    assert run.read_csv("metrics/x.csv") == [{"a": "1", "b": ""}, {"a": "q", "b": "0.5"}]
    run.write_json("run.json", {"labels": ["B", "A"], "class_names": {"A": "alpha"}, "x": float("nan")})
    assert run.read_json("run.json")["x"] is None
    assert run.labels() == ["B", "A"] and run.scheme_names() == {"B": "B", "A": "alpha"}


# ------------------------------------------------------------------ metrics files
def test_evaluate_run_files(run: RunDir) -> None:
    long = run.read_csv("metrics/long.csv")
    assert set(long[0]) == {"method", "split", "fold", "metric", "class", "value"}
    cv = [r for r in long if r["split"] == "cv"]
    assert {r["fold"] for r in cv} == {str(k) for k in range(5)}
    assert not any(r["metric"] == "coverage" for r in cv)  # external evaluator only on external splits
    ext = [r for r in long if r["split"] == "external"]
    assert any(r["metric"] == "coverage" for r in ext)
    assert any(r["metric"] == "no_call_rate" and r["class"] == "OTH" for r in ext)
    summary = run.read_csv("metrics/summary.csv")
    row = next(r for r in summary if r["method"] == "deep" and r["split"] == "cv"
               and r["metric"] == "recall_strict" and r["class"] == "BLA")
    vals = [float(r["value"]) for r in cv if r["method"] == "deep" and r["metric"] == "recall_strict"
            and r["class"] == "BLA"]
    assert row["n_folds"] == "5"
    assert float(row["mean"]) == pytest.approx(np.mean(vals))
    assert float(row["sd"]) == pytest.approx(np.std(vals, ddof=1))
    one = next(r for r in summary if r["split"] == "external" and r["metric"] == "coverage")
    assert one["n_folds"] == "1" and one["sd"] == ""
    js = run.read_json("metrics/metrics.json")
    assert set(js["methods"]) == set(METHODS)
    assert js["methods"]["deep"]["cv"]["summary"]["recall_strict"]["BLA"]["mean"] == pytest.approx(np.mean(vals))


def test_evaluate_run_default_evaluators_from_registry(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path, n_folds=2)
    evaluate_run(run)
    metrics = {r["metric"] for r in run.read_csv("metrics/long.csv")}
    assert {"recall_tolerant", "balanced_accuracy_strict", "coverage"} <= metrics


# ------------------------------------------------------------------ reporters
def test_table1(run: RunDir) -> None:
    paths = Table1Reporter().report(run.path)
    md = (run.path / "table1_cv.md").read_text()
    assert run.path / "table1_cv.md" in paths and (run.path / "metrics" / "table1_cv.csv") in paths
    assert "INFERRED" in md and "kfold" in md and "5 folds" in md
    for m in METHODS:
        assert f"## {m}" in md
    table_rows = [line for line in md.splitlines() if line.startswith("| BLA ")]
    assert len(table_rows) == len(METHODS)
    cells = [c.strip() for c in table_rows[0].strip("|").split("|")]
    assert cells[:3] == ["BLA", "blast", "60"]  # n images summed over folds
    assert all(re.fullmatch(r"\d\.\d\d ± \d\.\d\d", c) for c in cells[3:])
    with open(run.path / "metrics" / "table1_cv.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["method"] for r in rows} == set(METHODS) and {r["class"] for r in rows} == set(LABELS)
    ext = (run.path / "table1_external.md").read_text()
    assert "coverage" in ext and "1 fold" in ext
    assert not re.search(r"\d ± ", ext)  # one fold: just the value


def _fold_predictions(run: RunDir, method: str, split: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """fold -> (truth, prediction), read straight from the CSV files (not through RunDir)."""
    out = {}
    for path in sorted((run.path / "predictions" / method / split).glob("fold-*.csv")):
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        out[int(path.stem.split("-")[1])] = (np.array([r["truth"] for r in rows]),
                                             np.array([r["prediction"] for r in rows]))
    return out


def _tolerant_pr(t: np.ndarray, p: np.ndarray, c: str) -> tuple[float, float]:
    """Tolerant precision and recall of c from the definitions (docs/tolerance.md), PAIRS as the map."""
    ok = {c} | {x for pair in PAIRS if c in pair for x in pair}
    called = p == c
    precision = float(np.isin(t[called], list(ok)).mean()) if called.any() else 0.0
    recall = float(np.isin(p[t == c], list(ok)).mean()) if (t == c).any() else 0.0
    return precision, recall


def _mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_table1_values_match_summary_and_an_independent_computation(run: RunDir) -> None:
    Table1Reporter().report(run.path)
    md = (run.path / "table1_cv.md").read_text()
    summary = {(r["method"], r["split"], r["metric"], r["class"]): r for r in run.read_csv("metrics/summary.csv")}
    with open(run.path / "metrics" / "table1_cv.csv", newline="") as fh:
        csv_rows = {(r["method"], r["class"]): r for r in csv.DictReader(fh)}
    columns = ("precision_strict", "precision_tolerant", "recall_strict", "recall_tolerant")
    sections = md.split("\n## ")
    for method in METHODS:
        folds = _fold_predictions(run, method, "cv")
        assert len(folds) == 5
        body = next(sec for sec in sections if sec.startswith(f"{method}\n"))
        cells = {row[0]: row for row in ([c.strip() for c in line.strip("|").split("|")]
                                         for line in body.splitlines() if line.startswith("| ") and "---" not in line)}
        for c in LABELS:
            per_fold = {m: [] for m in columns}
            for t, p in folds.values():
                pr = skm.precision_recall_fscore_support(t, p, labels=[c], zero_division=0)
                tol_p, tol_r = _tolerant_pr(t, p, c)
                per_fold["precision_strict"].append(pr[0][0])
                per_fold["recall_strict"].append(pr[1][0])
                per_fold["precision_tolerant"].append(tol_p)
                per_fold["recall_tolerant"].append(tol_r)
            row = cells[c]
            assert row[:3] == [c, NAMES[c], str(sum(int((t == c).sum()) for t, _ in folds.values()))]
            for m, cell in zip(columns, row[3:], strict=True):
                s_row = summary[(method, "cv", m, c)]
                # the cell is summary.csv's mean ± sd, and both are the folds' values recomputed here
                assert cell == f"{float(s_row['mean']):.2f} ± {float(s_row['sd']):.2f}" == _mean_sd(per_fold[m])
                assert float(s_row["mean"]) == pytest.approx(np.mean(per_fold[m]), abs=1e-12)
                assert float(csv_rows[(method, c)][f"{m}_mean"]) == pytest.approx(np.mean(per_fold[m]), abs=1e-12)
                assert float(csv_rows[(method, c)][f"{m}_sd"]) == pytest.approx(np.std(per_fold[m], ddof=1), abs=1e-12)
        # the summary block: balanced accuracy (strict) and macro-F1 (strict) per fold, from scikit-learn
        line = next(line for line in sections[-1].splitlines() if line.startswith(f"| {method} |"))
        got = [x.strip() for x in line.strip("|").split("|")]
        ba = [skm.balanced_accuracy_score(t, p) for t, p in folds.values()]
        f1 = [skm.f1_score(t, p, labels=LABELS, average="macro", zero_division=0) for t, p in folds.values()]
        assert got[1] == _mean_sd(ba) and got[3] == _mean_sd(f1)


def test_tolerance_note_follows_the_recorded_source(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path, n_folds=2)
    info = run.read_json("run.json")
    expected = {
        "scheme": "this tolerance map is INFERRED from the strict/tolerant differences in Table 1 of Matek",
        "protocol": "BLA–PMO, MYB–PMO; tolerance pairs given by the protocol.",
        "none": "No tolerance pairs: tolerant = strict.",
    }
    for source, text in expected.items():
        run.write_json("run.json", info | {"tolerance_source": source,
                                           "tolerated_pairs": [] if source == "none" else PAIRS})
        Table1Reporter().report(run.path)
        HtmlReporter().report(run.path)
        md = (run.path / "table1_cv.md").read_text()
        html = (run.path / "index.html").read_text()
        assert text in md and text in html
        assert ("INFERRED" in md) == (source == "scheme") and ("INFERRED" in html) == (source == "scheme")
    # a scheme that publishes its pairs (run.json records no inference): no INFERRED note
    run.write_json("run.json", info | {"tolerance_source": "scheme", "tolerance_inferred_from": ""})
    Table1Reporter().report(run.path)
    assert "INFERRED" not in (run.path / "table1_cv.md").read_text()
    # the value runs wrote before "scheme" existed reads as "scheme"
    run.write_json("run.json", info | {"tolerance_source": "inferred from Matek et al. 2021 Table 1"})
    Table1Reporter().report(run.path)
    assert "INFERRED" in (run.path / "table1_cv.md").read_text()


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_paired_stats(run: RunDir) -> None:
    paths = PairedStatsReporter(n_boot=200).report(run.path)
    assert run.path / "metrics" / "paired_cv.csv" in paths
    rows = run.read_csv("metrics/paired_cv.csv")
    assert {r["criterion"] for r in rows} == {"strict", "tolerant"}
    r = next(r for r in rows if r["criterion"] == "strict")
    assert {r["method_a"], r["method_b"]} == set(METHODS)
    assert int(r["n_images"]) == sum(COUNTS.values()) and r["n_folds"] == "5"
    assert float(r["ci_low"]) <= float(r["diff"]) <= float(r["ci_high"])
    assert "classical" in (run.path / "paired_cv.md").read_text()
    # the values: pooled over the fold CSVs here (by image index) and recomputed independently
    pooled = {}
    for m in (r["method_a"], r["method_b"]):
        by_image = {}
        for path in sorted((run.path / "predictions" / m / "cv").glob("fold-*.csv")):
            with open(path, newline="") as fh:
                for row in csv.DictReader(fh):
                    by_image[int(row["image"])] = (row["truth"], row["prediction"])
        pooled[m] = [by_image[i] for i in sorted(by_image)]
    truth = np.array([t for t, _ in pooled[r["method_a"]]])
    pa = np.array([p for _, p in pooled[r["method_a"]]])
    pb = np.array([p for _, p in pooled[r["method_b"]]])
    ba_a, ba_b = skm.balanced_accuracy_score(truth, pa), skm.balanced_accuracy_score(truth, pb)
    assert float(r["balanced_accuracy_a"]) == pytest.approx(ba_a, abs=1e-12)
    assert float(r["diff"]) == pytest.approx(ba_a - ba_b, abs=1e-12)
    assert (int(r["mcnemar_b"]), int(r["mcnemar_c"])) == (int(np.sum((truth == pa) & (truth != pb))),
                                                          int(np.sum((truth != pa) & (truth == pb))))
    ref = reference_bootstrap(truth, pa, pb, n_boot=200, confidence=0.95, seed=0)
    assert (float(r["diff"]), float(r["ci_low"]), float(r["ci_high"])) == pytest.approx(ref, abs=1e-12)


def test_charts(run: RunDir) -> None:
    paths = RecallChartReporter().report(run.path)
    assert run.path / "charts" / "recall_cv.png" in paths
    for p in paths:
        _png_ok(p, 1000)
    paths = ConfusionChartReporter().report(run.path)
    names = {p.name for p in paths}
    assert names == {f"confusion_{m}_{s}.png" for m in METHODS for s in ("cv", "external")}
    for p in paths:
        _png_ok(p)


def test_html_and_evaluate_and_report(run: RunDir) -> None:
    written = evaluate_and_report(run)
    assert written[-1] == run.path / "index.html"
    html = (run.path / "index.html").read_text()
    for m in METHODS:
        assert m in html
    assert 'src="charts/recall_cv.png"' in html and "confusion_deep_external.png" in html
    assert 'href="table1_cv.md"' in html and "metrics/summary.csv" in html
    assert "<script" not in html
    assert (run.path / "metrics" / "paired_external.csv").is_file()


def test_reporters_compute_missing_metrics(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path, n_folds=2)
    HtmlReporter().report(run.path)
    assert (run.path / "metrics" / "long.csv").is_file() and (run.path / "index.html").is_file()
