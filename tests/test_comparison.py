"""Cross-split comparison (Fig. 3B), Table 1 in the paper's layout, the pooled Wilson interval."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cytocompare.classes import load_scheme
from cytocompare.config import parse_protocol
from cytocompare.evaluation import evaluate_run
from cytocompare.metrics import PrecisionRecallEvaluator, SummaryEvaluator
from cytocompare.reports.comparison import ComparisonChartReporter, wilson_interval
from cytocompare.reports.tables import Table1Reporter
from cytocompare.rundir import RunDir

LABELS = ["BLA", "PMO", "MYB", "LYT", "ABE"]
NAMES = {"BLA": "blast", "PMO": "promyelocyte", "MYB": "myelocyte", "LYT": "lymphocyte",
         "ABE": "abnormal eosinophil"}
COUNTS = {"BLA": 30, "PMO": 20, "MYB": 15, "LYT": 25, "ABE": 8}
PAIRS = [["BLA", "PMO"], ["PMO", "MYB"]]


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def make_run(path: Path) -> tuple[RunDir, dict]:
    """``classical`` on a 70/30 holdout that did not test ABE (dropped), ``deep`` and ``seq`` on 5
    folds; ABE has 8 cells, 1-2 per fold. Returns the run and the predictions (for hand checks)."""
    rng = np.random.default_rng(3)
    run = RunDir(path)
    truth = np.array([c for c in LABELS for _ in range(COUNTS[c])], dtype=str)
    images = np.arange(len(truth))
    fold_of = np.empty(len(truth), dtype=int)
    for c in LABELS:
        idx = np.flatnonzero(truth == c)
        fold_of[idx] = rng.permutation(np.arange(len(idx)) % 5)
    kept = {}
    for method, acc in (("deep", 0.8), ("seq", 0.6)):
        for k in range(5):
            sel = fold_of == k
            pred = truth[sel].copy()
            wrong = rng.random(sel.sum()) > acc
            pred[wrong] = rng.choice(LABELS, size=int(wrong.sum()))
            kept[(method, k)] = (truth[sel], pred)
            run.write_predictions(method, "cv5", k, images=images[sel], paths=[f"i/{i}.jpg" for i in images[sel]],
                                  truth=truth[sel], prediction=pred, info={})
    hold = np.flatnonzero((truth != "ABE") & (rng.random(len(truth)) < 0.3))
    pred = truth[hold].copy()
    wrong = rng.random(len(hold)) > 0.5
    pred[wrong] = rng.choice(LABELS[:-1], size=int(wrong.sum()))
    kept[("classical", 0)] = (truth[hold], pred)
    run.write_predictions("classical", "holdout70", 0, images=images[hold], paths=[f"i/{i}.jpg" for i in hold],
                          truth=truth[hold], prediction=pred, info={})
    run.write_json("run.json", {
        "status": "finished", "protocol_name": "t", "protocol_hash": "x", "class_scheme": "matek2021",
        "labels": LABELS, "class_names": NAMES, "class_counts": COUNTS, "tolerated_pairs": PAIRS,
        "tolerance_source": "scheme", "no_call_classes": [],
        "methods": {"classical": {"splits": ["holdout70"]}, "deep": {"splits": ["cv5"]}, "seq": {"splits": ["cv5"]}},
        "splits": {"cv5": {"kind": "kfold", "n_folds": 5}, "holdout70": {"kind": "holdout", "n_folds": 1}},
    })
    run.write_text("protocol.yaml", yaml.safe_dump({"name": "t", "comparisons": {
        "fig3b": {"classical": "holdout70", "deep": "cv5", "seq": "cv5", "absent": "cv5"}}}))
    evaluate_run(run, {"precision-recall": PrecisionRecallEvaluator(), "summary": SummaryEvaluator()})
    return run, kept


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, dict]:
    return make_run(tmp_path_factory.mktemp("cmp"))


# ------------------------------------------------------------------ Wilson interval
def test_wilson_hand_worked() -> None:
    # 5/8: p = .625, z = 1.959964; centre = (p + z²/2n) / (1 + z²/n), half = z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)
    z = 1.959963984540054
    n, p = 8, 5 / 8
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = wilson_interval(5, 8)
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert (round(lo, 4), round(hi, 4)) == (0.3057, 0.8632)  # the textbook value
    assert wilson_interval(0, 8)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(8, 8)[1] == pytest.approx(1.0)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


# ------------------------------------------------------------------ comparison
def test_comparison_files(made: tuple[RunDir, dict]) -> None:
    run, kept = made
    paths = ComparisonChartReporter().report(run.path)
    names = {p.name for p in paths}
    assert names == {"compare_fig3b.csv", "compare_fig3b.md", "compare_fig3b.png"}
    rows = _read(run.path / "metrics" / "compare_fig3b.csv")
    assert {(r["method"], r["split"]) for r in rows} == {("classical", "holdout70"), ("deep", "cv5"), ("seq", "cv5")}
    # every class a compared split tested, ABE included; classical did not test ABE: no value
    abe = [r for r in rows if r["class"] == "ABE" and r["criterion"] == "strict"]
    by = {r["method"]: r for r in abe}
    assert by["classical"]["tested"] == "0" and by["classical"]["recall_mean"] == "" and by["classical"]["wilson_low"] == ""
    # deep on ABE: pooled k/n over the 5 folds from the predictions, Wilson on it, mean/sd over folds
    t = np.concatenate([kept[("deep", k)][0] for k in range(5)])
    p = np.concatenate([kept[("deep", k)][1] for k in range(5)])
    k, n = int(((t == "ABE") & (p == "ABE")).sum()), int((t == "ABE").sum())
    assert n == 8
    d = by["deep"]
    assert (int(d["pooled_correct"]), int(d["pooled_n"])) == (k, n)
    lo, hi = wilson_interval(k, n)
    assert float(d["wilson_low"]) == pytest.approx(lo) and float(d["wilson_high"]) == pytest.approx(hi)
    folds = [float(((kept[("deep", f)][0] == "ABE") & (kept[("deep", f)][1] == "ABE")).sum()
                   / (kept[("deep", f)][0] == "ABE").sum()) for f in range(5)]
    assert float(d["recall_mean"]) == pytest.approx(np.mean(folds))
    assert float(d["recall_sd"]) == pytest.approx(np.std(folds, ddof=1))
    # tolerant recall of PMO for classical (1 fold: no sd): PMO called BLA, PMO or MYB counts
    tc, pc = kept[("classical", 0)]
    r = next(r for r in rows if r["method"] == "classical" and r["class"] == "PMO" and r["criterion"] == "tolerant")
    assert float(r["recall_mean"]) == pytest.approx(np.isin(pc[tc == "PMO"], ["BLA", "PMO", "MYB"]).mean())
    assert r["recall_sd"] == ""
    md = (run.path / "compare_fig3b.md").read_text()
    assert "`absent` on `cv5`" in md and "Wilson" in md
    abe_line = next(line for line in md.splitlines() if line.startswith("| ABE "))
    assert abe_line.split("|")[3].strip() == "–"
    with Image.open(run.path / "charts" / "compare_fig3b.png") as im:
        assert im.format == "PNG" and im.size[0] > 800


def test_comparisons_validated() -> None:
    base = {"name": "x", "data": {"path": "d"}, "splits": {"cv5": {"kind": "kfold"}, "h": {"kind": "holdout"}},
            "methods": {"a": {"classifier": {"name": "c"}, "splits": ["cv5"]}}}
    ok = parse_protocol(yaml.safe_dump({**base, "comparisons": {"f": {"a": "cv5"}}}))
    assert ok.comparisons == {"f": {"a": "cv5"}}
    for bad, msg in (({"f": {"b": "cv5"}}, "unknown method"), ({"f": {"a": "zz"}}, "unknown split"),
                     ({"f": {"a": "h"}}, "does not run on split")):
        with pytest.raises(Exception, match=msg):
            parse_protocol(yaml.safe_dump({**base, "comparisons": bad}))
    ext = {**base, "test_data": {"path": "t"}, "splits": {**base["splits"], "ext": {"kind": "external"}},
           "methods": {"a": {"classifier": {"name": "c"}, "splits": ["cv5", "ext"]}}}
    assert parse_protocol(yaml.safe_dump({**ext, "comparisons": {"f": {"a": "ext"}, "g": {"a": "cv5"}}}))
    with pytest.raises(Exception, match="external split"):
        parse_protocol(yaml.safe_dump({**ext, "methods": {**ext["methods"], "b": ext["methods"]["a"]},
                                       "comparisons": {"f": {"a": "ext", "b": "cv5"}}}))
    # result-neutral: adding a comparison does not change the digest (a run may resume)
    assert ok.digest() == parse_protocol(yaml.safe_dump(base)).digest()


# ------------------------------------------------------------------ Table 1, paper layout
def test_table1_paper_layout(made: tuple[RunDir, dict]) -> None:
    run, kept = made
    before = {p: p.read_bytes() for p in (run.path / "metrics").glob("*.csv")}
    Table1Reporter().report(run.path)
    scheme = load_scheme("matek2021")
    md = (run.path / "table1_paper_holdout70.md").read_text()
    assert "published (checked against the publisher's Table 1)" in md and "marrovision" in md
    assert "view-large/10296123" in md  # where it was checked
    rows = _read(run.path / "metrics" / "table1_paper_holdout70.csv")
    classical = [r for r in rows if r["method"] == "classical"]
    # the run's classes (ABE too, which this split did not test) in lineage order
    assert [r["class"] for r in classical] == [c for c in scheme.lineage_order if c in LABELS]
    assert [r["class"] for r in classical] == ["BLA", "PMO", "MYB", "LYT", "ABE"]
    abe = next(r for r in classical if r["class"] == "ABE")
    assert abe["tested"] == "0" and abe["recall_strict_mean"] == "" and abe["precision_strict_mean"] == ""
    abe_md = next(line for line in md.splitlines() if line.startswith("| ABE "))
    cells = [c.strip() for c in abe_md.strip("|").split("|")]
    assert cells[1] == "abnormal eosinophil" and set(cells[2:9]) == {"–"}
    # ours vs published: BLA strict recall, ResNeXt-50 value 0.65
    tc, pc = kept[("classical", 0)]
    ours = float((pc[tc == "BLA"] == "BLA").mean())
    bla = next(r for r in classical if r["class"] == "BLA")
    assert float(bla["recall_strict_published"]) == 0.65
    assert float(bla["recall_strict_minus_published"]) == pytest.approx(ours - 0.65)
    assert float(bla["recall_tolerant_published"]) == 0.69
    k = int((pc[tc == "BLA"] == "BLA").sum())
    assert (int(bla["recall_strict_pooled_correct"]), int(bla["recall_strict_pooled_n"])) == (k, int((tc == "BLA").sum()))
    # 5-fold split: full names, order
    cv = (run.path / "table1_paper_cv5.md").read_text()
    assert cv.index("| BLA | blast") < cv.index("| PMO | promyelocyte") < cv.index("| LYT | lymphocyte")
    # the table1 reporter leaves the metric files it does not own as they were
    for p, b in before.items():
        assert p.read_bytes() == b, p


def test_scheme_published_table() -> None:
    pub = load_scheme("matek2021").published_table1
    assert pub["status"] == "checked against the publisher's Table 1" and len(pub["classes"]) == 21
    assert "all 84 values" in pub["checked"]
    # anchors-deep.md 1c, marrovision transcription (strict): a few spot values
    assert pub["classes"]["ABE"]["recall_strict"] == 0.20 and pub["classes"]["NGS"]["precision_strict"] == 0.92
    assert pub["classes"]["KSC"]["recall_strict"] == 0.90
    # macro recall of the transcription = the derived balanced accuracy 0.689
    assert np.mean([v["recall_strict"] for v in pub["classes"].values()]) == pytest.approx(0.689, abs=5e-4)
