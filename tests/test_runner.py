"""End to end: a protocol run on small synthetic image folders, through the CLI and the runner."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cytocompare.cli import cli
from cytocompare.testing.datasets import make_cell

LOOKS = {"BLA": (0.2, (90, 40, 140)), "LYT": (0.32, (60, 30, 110)), "NGS": (0.12, (120, 60, 170))}


def make_folder(root: Path, n: int = 10, size: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for cls, (frac, nuc) in LOOKS.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            img = make_cell(size, frac, nuc, (225, 180, 200), rng)
            Image.fromarray(img).save(root / cls / f"{cls}_{i:05d}.jpg", quality=95)
    return root


PROTOCOL = """
version: 1
name: e2e
seed: 7
data: {{path: {data}, image_size: [64, 64], on_bad_file: {on_bad}}}
splits:
  cv5: {{kind: kfold, n_splits: 5}}
  ho: {{kind: holdout, test_size: 0.3}}
methods:
  colour:
    classifier: {{name: colour-logreg, params: {{max_iter: 300}}}}
    splits: [cv5, ho]
  colour-svm:
    features: {{name: colour-stats}}
    classifier: {{name: svm-rbf, params: {{param_grid: null}}}}
    splits: [cv5]
  later:
    classifier: {{name: not-installed-yet}}
    splits: [cv5]
    optional: true
n_jobs: 1
cache_dir: {cache}
# synthetic cells differ only by noise: a perceptual hash rightly calls them near-duplicates
near_duplicates: {{threshold: null}}
"""


def write_protocol(tmp: Path, data: Path, on_bad: str = "skip") -> Path:
    p = tmp / "protocol.yaml"
    p.write_text(PROTOCOL.format(data=data, on_bad=on_bad, cache=tmp / "cache"))
    return p


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = make_folder(tmp_path / "data")
    # a truncated JPEG and a greyscale image: both must be reported, neither silently dropped
    good = (root / "BLA" / "BLA_00000.jpg").read_bytes()
    (root / "BLA" / "BLA_truncated.jpg").write_bytes(good[: len(good) // 2])
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(root / "LYT" / "LYT_grey.jpg")
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_run_end_to_end_and_resume(tmp_path: Path, data: Path):
    out = tmp_path / "run"
    protocol = write_protocol(tmp_path, data)
    result = invoke("run", str(protocol), "-o", str(out))
    assert result.exit_code == 0, result.output
    for name in ("run.json", "protocol.yaml", "plugins.json", "splits.csv", "splits.json", "dataset.csv",
                 "skipped.csv", "metrics/long.csv", "metrics/summary.csv", "metrics/metrics.json",
                 "table1_cv5.md", "table1_ho.md", "charts/recall_cv5.png", "index.html"):
        assert (out / name).exists(), name
    assert json.loads((out / "run.json").read_text())["status"] == "finished"

    skipped = {Path(r["path"]).name: r["cause"] for r in read_csv(out / "skipped.csv")}
    assert set(skipped) == {"BLA_truncated.jpg", "LYT_grey.jpg"}
    assert "RGB" in skipped["LYT_grey.jpg"]

    # every image is tested exactly once over the 5 folds, with the same plan for every method
    tested = []
    for k in range(5):
        rows = read_csv(out / "predictions" / "colour" / "cv5" / f"fold-{k}.csv")
        tested += [int(r["image"]) for r in rows]
        assert {"truth", "prediction", "score_BLA"} <= set(rows[0])
    assert sorted(tested) == list(range(30))

    summary = read_csv(out / "metrics" / "summary.csv")
    bal = [r for r in summary if r["method"] == "colour" and r["split"] == "cv5"
           and r["metric"] == "balanced_accuracy_strict"]
    assert len(bal) == 1 and float(bal[0]["mean"]) > 0.8  # an easy synthetic task
    # the optional method with a missing component was skipped, not failed
    methods = json.loads((out / "run.json").read_text())["methods"]
    assert set(methods) == {"colour", "colour-svm"}
    # a feature pipeline and an image classifier were tested on exactly the same images
    for k in range(5):
        a = read_csv(out / "predictions" / "colour" / "cv5" / f"fold-{k}.csv")
        b = read_csv(out / "predictions" / "colour-svm" / "cv5" / f"fold-{k}.csv")
        assert [r["path"] for r in a] == [r["path"] for r in b]

    # resume: delete one finished fold; a rerun recomputes exactly that fold and keeps the rest
    fold3 = out / "predictions" / "colour" / "cv5" / "fold-3.json"
    kept = (out / "predictions" / "colour" / "cv5" / "fold-1.csv").stat().st_mtime_ns
    fold3.unlink()
    result = invoke("run", str(protocol), "-o", str(out))
    assert result.exit_code == 0
    assert "10 fold(s) resumed" in result.output and "1 fold(s) run" in result.output
    assert fold3.exists()
    assert (out / "predictions" / "colour" / "cv5" / "fold-1.csv").stat().st_mtime_ns == kept


def test_bad_file_stops_the_run_when_asked(tmp_path: Path, data: Path):
    protocol = write_protocol(tmp_path, data, on_bad="stop")
    result = CliRunner().invoke(cli, ["run", str(protocol), "-o", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "BLA_truncated.jpg" in result.output


def test_other_protocol_into_same_directory_is_refused(tmp_path: Path, data: Path):
    out = tmp_path / "run"
    protocol = write_protocol(tmp_path, data)
    assert invoke("run", str(protocol), "-o", str(out), "--only", "colour").exit_code == 0
    protocol.write_text(protocol.read_text().replace("seed: 7", "seed: 8"))
    result = CliRunner().invoke(cli, ["run", str(protocol), "-o", str(out)])
    assert result.exit_code != 0 and "different protocol" in result.output


def test_small_class_under_5_fold(tmp_path: Path):
    root = make_folder(tmp_path / "data", n=10)
    for f in sorted((root / "NGS").iterdir())[3:]:
        f.unlink()  # NGS keeps 3 images: too few for 5 folds
    protocol = write_protocol(tmp_path, root)
    result = CliRunner().invoke(cli, ["run", str(protocol), "-o", str(tmp_path / "run")])
    assert result.exit_code != 0 and "NGS" in result.output and "drop" in result.output
    protocol.write_text(protocol.read_text() + "small_classes: drop\n")
    result = invoke("run", str(protocol), "-o", str(tmp_path / "run2"))
    assert result.exit_code == 0, result.output
    plan = json.loads((tmp_path / "run2" / "splits.json").read_text())
    assert any(e["label"] == "NGS" for e in plan["excluded"])


def test_validate_command_exit_codes(tmp_path: Path, data: Path):
    protocol = write_protocol(tmp_path, data)
    assert invoke("validate", str(protocol)).exit_code == 0
    protocol.write_text(protocol.read_text().replace("colour-logreg", "colour-logre"))
    result = CliRunner().invoke(cli, ["validate", str(protocol)])
    assert result.exit_code == 2 and "did you mean 'colour-logreg'" in result.output
    protocol.write_text("name: [broken")
    result = CliRunner().invoke(cli, ["validate", str(protocol)])
    assert result.exit_code == 2 and "not valid YAML" in result.output


def test_empty_class_folder_is_reported(tmp_path: Path):
    root = make_folder(tmp_path / "data", n=10)
    (root / "MON").mkdir()
    protocol = write_protocol(tmp_path, root)
    result = invoke("run", str(protocol), "-o", str(tmp_path / "run"), "--only", "colour")
    assert result.exit_code == 0
    assert "MON" in result.output  # the warning names the empty class


def test_report_command_redraws(tmp_path: Path, data: Path):
    out = tmp_path / "run"
    invoke("run", str(write_protocol(tmp_path, data)), "-o", str(out), "--only", "colour")
    (out / "charts" / "recall_cv5.png").unlink()
    result = invoke("report", str(out))
    assert result.exit_code == 0
    assert (out / "charts" / "recall_cv5.png").exists()


def test_only_then_full_run_keeps_every_method(tmp_path: Path, data: Path):
    out = tmp_path / "run"
    protocol = write_protocol(tmp_path, data)
    assert invoke("run", str(protocol), "-o", str(out), "--only", "colour-svm").exit_code == 0
    assert invoke("run", str(protocol), "-o", str(out), "--only", "colour").exit_code == 0
    assert set(json.loads((out / "run.json").read_text())["methods"]) == {"colour", "colour-svm"}
    rows = read_csv(out / "metrics" / "summary.csv")
    assert {r["method"] for r in rows} == {"colour", "colour-svm"}


CKPT_PROTOCOL = """
version: 1
name: ckpt
seed: 3
data: {{path: {data}, image_size: [64, 64]}}
splits:
  ho: {{kind: holdout, test_size: 0.3}}
methods:
  cnn:
    classifier: {{name: checkpointing}}
    splits: [ho]
    keep_checkpoints: {keep}
  given:
    classifier: {{name: checkpointing, params: {{checkpoint_dir: {own}}}}}
    splits: [ho]
reports: []
"""


@pytest.mark.parametrize("keep", [False, True])
def test_runner_gives_classifiers_a_checkpoint_dir_per_fold_and_resumes_inside_it(tmp_path, isolated_registry, keep):
    from cytocompare.config import load_protocol
    from cytocompare.runner import Runner
    from tests.plugins.dummy import CheckpointingClassifier, CheckpointingPlugin

    data = make_folder(tmp_path / "data", n=6)
    own = tmp_path / "users-own"
    p = tmp_path / "ckpt.yaml"
    p.write_text(CKPT_PROTOCOL.format(data=data, keep=str(keep).lower(), own=own))
    registry = isolated_registry(CheckpointingPlugin())
    run_dir = tmp_path / "run"
    CheckpointingClassifier.seen = []
    CheckpointingClassifier.crash_once = True
    with pytest.raises(KeyboardInterrupt):  # interrupted inside the first fold, after its "epoch 1"
        Runner(load_protocol(p), run_dir, protocol_path=p, registry=registry, log=lambda m: None).run()
    expected = run_dir / "checkpoints" / "cnn" / "ho" / "fold0"
    assert CheckpointingClassifier.seen == [(str(expected), False)]
    assert (expected / "last.txt").exists()  # the interrupted fold's progress is on disk

    Runner(load_protocol(p), run_dir, protocol_path=p, registry=registry, log=lambda m: None).run()
    # the rerun trained the same fold from its checkpoint; a checkpoint_dir the user set is left as given
    assert CheckpointingClassifier.seen[1:] == [(str(expected), True), (str(own), False)]
    assert expected.exists() == keep  # removed once the fold's predictions were written, unless kept
    assert (own / "last.txt").exists()  # never deleted: it is the user's folder
    assert len(read_csv(next((run_dir / "predictions").rglob("*.csv")))) > 0


REPORTING_PROTOCOL = """
version: 1
name: reporting
seed: 5
data: {{path: {data}, image_size: [64, 64]}}
splits:
  ho: {{kind: holdout, test_size: 0.3}}
methods:
  majority:
    classifier: {{name: reporting}}
    splits: [ho]
reports: []
n_jobs: 2
"""


def test_runner_uses_the_declared_capabilities_and_injects_seed_and_n_jobs(tmp_path, isolated_registry):
    from cytocompare.config import load_protocol
    from cytocompare.rundir import RunDir
    from cytocompare.runner import Runner
    from tests.plugins.dummy import ReportingPlugin

    p = tmp_path / "reporting.yaml"
    p.write_text(REPORTING_PROTOCOL.format(data=make_folder(tmp_path / "data", n=6)))
    run_dir = tmp_path / "run"
    Runner(load_protocol(p), run_dir, protocol_path=p, registry=isolated_registry(ReportingPlugin()),
           log=lambda m: None).run()
    info = json.loads((run_dir / "predictions" / "majority" / "ho" / "fold-0.json").read_text())
    # ReportsFit: the report is recorded whole, its variant and best parameters also on their own
    assert info["fit_report"] == {"variant": "majority", "best_params": {"strategy": "most_frequent"}, "n_jobs": 2}
    assert info["variant"] == "majority" and info["best_params"] == {"strategy": "most_frequent"}
    # the injection rule: the protocol's seed and n_jobs reach a constructor that takes them
    assert "random_state=5" in info["components"]["classifier"] and "n_jobs=2" in info["components"]["classifier"]
    # WritesArtifacts: the first fold's test images
    assert (run_dir / "artifacts" / "majority" / "ho" / "majority.txt").read_text().endswith(f"for {info['n_test']} images\n")
    assert RunDir(run_dir).tolerance_source() == "scheme"
    assert json.loads((run_dir / "run.json").read_text())["tolerance_source"] == "scheme"


def test_protocol_defaults_is_the_one_injection_rule():
    from cytocompare.runner import protocol_defaults
    from tests.plugins.dummy import MajorityClassifier, ReportingClassifier

    assert protocol_defaults("classifier", {}, ReportingClassifier, seed=3, n_jobs=4) == {"random_state": 3, "n_jobs": 4}
    # what the protocol sets wins; a constructor without the parameters gets nothing
    assert protocol_defaults("classifier", {"n_jobs": 1}, ReportingClassifier, seed=3, n_jobs=4) == {
        "random_state": 3, "n_jobs": 1}
    assert protocol_defaults("classifier", {}, MajorityClassifier, seed=3, n_jobs=4) == {}
    # an extractor's parallelism is the feature cache's (the protocol's n_jobs over images)
    assert protocol_defaults("feature_extractor", {}, ReportingClassifier, seed=3, n_jobs=4) == {"random_state": 3}


def test_run_info_is_written_through_its_schema_and_tolerance_source_reads_old_runs(tmp_path):
    import dataclasses

    from cytocompare.rundir import RunDir, RunInfo

    run = RunDir(tmp_path)
    fields = {f.name: None for f in dataclasses.fields(RunInfo)}
    run.write_run_info(RunInfo(**fields | {"status": "running", "methods": {"a": {}}, "tolerance_source": "none"}))
    run.write_run_info(RunInfo(**fields | {"status": "finished", "methods": {"b": {}}, "tolerance_source": "none"}))
    stored = run.info
    assert set(stored) == set(fields) | {"started", "finished"}
    assert list(stored["methods"]) == ["a", "b"]  # merged: a later --only run hides nothing
    assert run.tolerance_source() == "none"
    for legacy, pairs, source in [("inferred from Matek et al. 2021 Table 1", [["MYB", "MMZ"]], "scheme"),
                                  ("protocol", [["A", "B"]], "protocol"), (None, [], "none")]:
        run.write_json("run.json", {"tolerated_pairs": pairs} | ({} if legacy is None else {"tolerance_source": legacy}))
        assert run.tolerance_source() == source
