"""Issue 8.3: cells a feature extractor failed on are found, listed and dealt with as the protocol says.

On real data: bundled Matek cells beside the two real failure cases, a blank white and a black
250 x 250 JPEG, through the ``handcrafted`` extractor (profile "quick") and the feature cache.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cytocompare.datasets import bundled_sample_path, load_dataset
from cytocompare.errors import DataError, PluginError
from cytocompare.feature_failures import (
    FEATURE_FAILURE_COLUMNS,
    FeatureFailureError,
    FeatureFailures,
    ReportsFeatureFailures,
    apply_feature_failures,
    failure_note,
    filter_fold,
    read_feature_failures,
    record_feature_failures,
)
from cytocompare.rundir import RunDir
from cytocompare.splits import Fold

import cytocompare_classical.extractor as handcrafted  # noqa: E402  (installed by scripts/setup.sh: its absence is a broken install)

CLASSES = ("BLA", "LYT", "NGS")
N_REAL = 4  # real cells per class


def make_folder(root: Path, n_real: int = N_REAL) -> Path:
    """``n_real`` bundled cells per class, plus a blank white image (as BLA) and a black one (as LYT)."""
    src = bundled_sample_path()
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for f in sorted((src / c).iterdir())[:n_real]:
            shutil.copyfile(f, root / c / f.name)
    Image.new("RGB", (250, 250), (255, 255, 255)).save(root / "BLA" / "BLA_blank_white.jpg", quality=95)
    Image.new("RGB", (250, 250), (0, 0, 0)).save(root / "LYT" / "LYT_blank_black.jpg", quality=95)
    return root


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory):
    """(images, extractor, features through the feature cache, cache root)."""
    from cytocompare.feature_cache import FeatureCache

    tmp = tmp_path_factory.mktemp("ff")
    images = load_dataset(make_folder(tmp / "data"), n_jobs=1).images
    ext = handcrafted.HandcraftedFeatures(profile="quick").fit(images)
    F = FeatureCache(tmp / "cache").compute(ext, images, n_jobs=1)
    return images, ext, np.asarray(F), tmp / "cache"


def _blank(images) -> dict[str, int]:
    return {Path(p).name: i for i, p in enumerate(images.paths) if "blank" in p}


# ---------------------------------------------------------------------------- the protocol
def test_the_classical_extractor_names_exactly_the_blank_images(real) -> None:
    images, ext, F, _ = real
    assert isinstance(ext, ReportsFeatureFailures)
    reasons = ext.failure_reasons(F, images)
    blank = _blank(images)
    assert sorted(blank) == ["BLA_blank_white.jpg", "LYT_blank_black.jpg"]
    assert {i for i, r in enumerate(reasons) if r is not None} == set(blank.values())  # every real cell is fine
    for i in blank.values():
        assert "cell segmentation failed" in reasons[i] and "no contrast" in reasons[i], reasons[i]
    # which rows failed is in the feature matrix alone (no new column: qc.segmentation_ok)
    alone = ext.failure_reasons(F)
    assert [r is None for r in alone] == [r is None for r in reasons]
    assert all("qc.segmentation_ok = 0" in r for r in alone if r is not None)
    assert [n for n in ext.get_feature_names_out() if n.startswith("qc.")] == ["qc.segmentation_ok"]


def test_failures_are_found_in_features_read_back_from_the_cache(real) -> None:
    from cytocompare.feature_cache import FeatureCache

    images, _, F, cache_root = real
    fresh = handcrafted.HandcraftedFeatures(profile="quick").fit(images)  # never transformed anything
    again = np.asarray(FeatureCache(cache_root).compute(fresh, images, n_jobs=1,
                                                        progress=lambda done, total: total and pytest.fail("recomputed")))
    assert np.array_equal(again, F)
    assert not hasattr(fresh, "failures_")  # the extractor never ran: only the matrix tells
    got = apply_feature_failures(fresh, again, images, "keep", "classical")
    assert sorted(Path(f.path).name for f in got.failures) == ["BLA_blank_white.jpg", "LYT_blank_black.jpg"]


# ---------------------------------------------------------------------------- the three policies
def test_keep_lists_them_and_excludes_nothing(real) -> None:
    images, ext, F, _ = real
    got = apply_feature_failures(ext, F, images, "keep", "classical")
    assert len(got) == 2 and got.excluded.tolist() == []
    assert got.keep(np.arange(len(images))).tolist() == list(range(len(images)))
    rows = got.rows()
    assert [dict(zip(FEATURE_FAILURE_COLUMNS, r, strict=True))["action"] for r in rows] == ["kept", "kept"]
    assert {r[2] for r in rows} == {"BLA", "LYT"} and {r[3] for r in rows} == {"classical"}
    assert "2 of 14 images failed" in got.describe() and "feature_failures.csv" in got.describe()


def test_skip_leaves_them_out_of_training_and_testing(real) -> None:
    images, ext, F, _ = real
    got = apply_feature_failures(ext, F, images, "skip", "classical")
    blank = sorted(_blank(images).values())
    assert got.excluded.tolist() == blank
    fold = Fold(train=np.arange(0, len(images), 2), test=np.arange(1, len(images), 2))
    kept = filter_fold(fold, {"train": got})
    assert not set(blank) & (set(kept.train.tolist()) | set(kept.test.tolist()))
    assert set(kept.train.tolist()) | set(kept.test.tolist()) == set(range(len(images))) - set(blank)
    assert "neither trained nor tested" in got.describe()
    # an external split: its test part follows the test set's failures, its training part the training set's
    none = FeatureFailures("classical", "skip", "test", 3)
    ext_fold = Fold(train=np.arange(len(images)), test=np.arange(3), test_source="external")
    out = filter_fold(ext_fold, {"train": got, "test": none})
    assert out.test.tolist() == [0, 1, 2] and out.train.tolist() == [i for i in range(len(images)) if i not in blank]
    # keep leaves a fold as it is
    assert filter_fold(fold, {"train": apply_feature_failures(ext, F, images, "keep", "classical")}) is fold


def test_stop_is_one_message_naming_every_file_and_its_cause(real) -> None:
    images, ext, F, _ = real
    with pytest.raises(FeatureFailureError) as info:
        apply_feature_failures(ext, F, images, "stop", "classical")
    message = str(info.value)
    assert isinstance(info.value, DataError) and "\n" not in message
    assert "BLA_blank_white.jpg" in message and "LYT_blank_black.jpg" in message and "no contrast" in message
    assert "'classical'" in message and "on_feature_failure: skip" in message
    assert len(info.value.failures) == 2  # for feature_failures.csv
    # nothing failed: stop does not stop
    good = [i for i in range(len(images)) if i not in _blank(images).values()]
    assert len(apply_feature_failures(ext, F[good], images.subset(good), "stop", "classical")) == 0


def test_an_extractor_without_the_protocol_reports_nothing_and_bad_answers_are_named(real) -> None:
    images, _, F, _ = real

    class Plain:
        pass

    assert len(apply_feature_failures(Plain(), F, images, "stop", "m")) == 0

    class Short:
        def failure_reasons(self, F, images=None):
            return [None]

    with pytest.raises(PluginError, match="Short: failure_reasons gave 1 entries for 14 rows"):
        apply_feature_failures(Short(), F, images, "keep", "m")
    with pytest.raises(ValueError, match="on_feature_failure must be one of keep, skip, stop"):
        apply_feature_failures(Plain(), F, images, "drop", "m")


# ---------------------------------------------------------------------------- feature_failures.csv
def test_the_csv_keeps_other_methods_and_replaces_its_own(tmp_path: Path, real) -> None:
    images, ext, F, _ = real
    run = RunDir(tmp_path)
    record_feature_failures(run, "a", [apply_feature_failures(ext, F, images, "keep", "a")])
    record_feature_failures(run, "b", [apply_feature_failures(ext, F, images, "skip", "b")])
    record_feature_failures(run, "a", [apply_feature_failures(ext, F, images, "keep", "a")])  # a resumed run
    rows = read_feature_failures(run)
    with open(tmp_path / "feature_failures.csv", newline="") as fh:
        assert next(csv.reader(fh)) == FEATURE_FAILURE_COLUMNS
    assert [(r["method"], r["action"]) for r in rows] == [("b", "skipped")] * 2 + [("a", "kept")] * 2
    assert {Path(r["path"]).name for r in rows} == {"BLA_blank_white.jpg", "LYT_blank_black.jpg"}
    assert all("no contrast" in r["cause"] for r in rows)
    note = failure_note(run)
    assert "a: 2 cells kept" in note and "b: 2 cells skipped" in note and "feature_failures.csv" in note
    # a method with no failure leaves the header only
    empty = RunDir(tmp_path / "empty")
    record_feature_failures(empty, "a", [FeatureFailures("a", "keep", "train", 5)])
    assert (tmp_path / "empty" / "feature_failures.csv").read_text().strip() == ",".join(FEATURE_FAILURE_COLUMNS)
    assert failure_note(empty) == ""


# ---------------------------------------------------------------------------- the reports
def _skipped_run(path: Path) -> RunDir:
    """Two methods on one holdout: ``classical`` skipped images 0 and 3 (their features failed)."""
    run = RunDir(path)
    truth = np.array(["BLA", "LYT", "BLA", "LYT", "BLA", "LYT", "BLA", "LYT"])
    good = np.array([1, 2, 4, 5, 6, 7])
    run.write_predictions("colour", "ho", 0, images=np.arange(8), paths=[f"{i}.jpg" for i in range(8)], truth=truth,
                          prediction=np.where(np.arange(8) % 3 == 0, "LYT", truth))
    run.write_predictions("classical", "ho", 0, images=good, paths=[f"{i}.jpg" for i in good], truth=truth[good],
                          prediction=truth[good])
    run.write_json("run.json", {"labels": ["BLA", "LYT"], "tolerated_pairs": [], "no_call_classes": [],
                                "methods": {"colour": {}, "classical": {}}, "splits": {"ho": {"kind": "holdout"}}})
    run.write_csv("feature_failures.csv", FEATURE_FAILURE_COLUMNS,
                  [[i, f"{i}.jpg", truth[i], "classical", "train", "cell segmentation failed: blank", "skipped"]
                   for i in (0, 3)])
    return run


def test_paired_statistics_pair_only_the_images_both_methods_were_tested_on(tmp_path: Path) -> None:
    from sklearn import metrics as skm

    from cytocompare.evaluation import paired_comparisons
    from cytocompare.reports.tables import PairedStatsReporter

    run = _skipped_run(tmp_path)
    (row,) = paired_comparisons(run, "ho", n_boot=50)
    # run order (run.json's methods, sorted): classical, then colour, which alone was tested on 0 and 3
    assert (row["method_a"], row["n_images"], row["n_only_a"], row["n_only_b"]) == ("classical", 6, 0, 2)
    colour = run.read_predictions("colour", "ho", 0)
    keep = np.array([1, 2, 4, 5, 6, 7])
    assert row["balanced_accuracy_b"] == pytest.approx(
        skm.balanced_accuracy_score(colour.truth[keep], colour.prediction[keep]))
    PairedStatsReporter(n_boot=50).report(run.path)
    md = (run.path / "paired_ho.md").read_text()
    assert "| 6 | 0 / 2 |" in md and "classical alone on 0, colour alone on 2" in md
    with open(run.path / "metrics" / "paired_ho.csv", newline="") as fh:
        assert {"n_only_a", "n_only_b"} <= set(next(csv.reader(fh)))


def test_table1_and_index_html_give_the_count_and_link_the_list(tmp_path: Path) -> None:
    from cytocompare.evaluation import evaluate_run
    from cytocompare.metrics import PrecisionRecallEvaluator, SummaryEvaluator
    from cytocompare.reports.html import HtmlReporter
    from cytocompare.reports.tables import Table1Reporter

    run = _skipped_run(tmp_path)
    evaluate_run(run, {"pr": PrecisionRecallEvaluator(), "summary": SummaryEvaluator()})
    Table1Reporter().report(run.path)
    HtmlReporter().report(run.path)
    md = (run.path / "table1_ho.md").read_text()
    assert "classical: 2 cells skipped" in md and "[feature_failures.csv](feature_failures.csv)" in md
    html = (run.path / "index.html").read_text()
    assert "feature failures" in html and "2 listed" in html and 'href="feature_failures.csv"' in html
    # a run whose features all worked says nothing
    (run.path / "feature_failures.csv").unlink()
    Table1Reporter().report(run.path)
    HtmlReporter().report(run.path)
    assert "feature_failures" not in (run.path / "table1_ho.md").read_text()
    assert "feature failures" not in (run.path / "index.html").read_text()


# ---------------------------------------------------------------------------- through `cytocompare run`
def _protocol(tmp: Path, data: Path, policy: str) -> Path:
    p = tmp / f"{policy}.yaml"
    p.write_text(
        f"version: 1\nname: ff-{policy}\nseed: 3\ndata: {{path: {data}, image_size: [250, 250]}}\n"
        "splits:\n  ho: {kind: holdout, test_size: 0.5}\n"
        "methods:\n"
        "  classical:\n    features: {name: handcrafted, params: {profile: quick}}\n"
        "    classifier: {name: svm-rbf, params: {param_grid: null}}\n"
        f"    splits: [ho]\n    on_feature_failure: {policy}\n"
        "  colour:\n    classifier: {name: colour-logreg}\n    splits: [ho]\n"
        f"n_jobs: 1\ncache_dir: {tmp / 'cache'}\nreports: [table1, paired-stats, html]\n")
    return p


@pytest.mark.parametrize("policy", ["keep", "skip", "stop"])
def test_a_run_lists_the_failed_cells_and_applies_the_policy(tmp_path: Path, policy: str) -> None:
    from click.testing import CliRunner

    from cytocompare.cli import cli

    data = make_folder(tmp_path / "data", n_real=3)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(_protocol(tmp_path, data, policy)), "-o", str(out)])
    assert "Traceback" not in result.output
    rows = read_feature_failures(RunDir(out))
    assert sorted(Path(r["path"]).name for r in rows) == ["BLA_blank_white.jpg", "LYT_blank_black.jpg"], result.output
    assert {r["method"] for r in rows} == {"classical"} and all("no contrast" in r["cause"] for r in rows)
    if policy == "stop":
        assert result.exit_code != 0
        assert "BLA_blank_white.jpg" in result.output and "LYT_blank_black.jpg" in result.output
        assert not (out / "predictions" / "classical").exists()
        return
    assert result.exit_code == 0, result.output
    assert "2 of 11 images failed" in result.output  # the run log's count
    tested = {Path(r["path"]).name
              for r in csv.DictReader(open(out / "predictions" / "classical" / "ho" / "fold-0.csv", newline=""))}
    info = json.loads((out / "predictions" / "classical" / "ho" / "fold-0.json").read_text())
    blank_tested = {"BLA_blank_white.jpg", "LYT_blank_black.jpg"} & tested
    assert info["n_train"] + info["n_test"] == (11 if policy == "keep" else 9)
    if policy == "skip":
        assert not blank_tested
    assert 'href="feature_failures.csv"' in (out / "index.html").read_text()
