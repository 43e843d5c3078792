"""Issue 8, the run directory and the ways a run ends (items 5-11, 14-16).

Most tests run the runner in this process with small synthetic cells and test plugins defined
here; subprocesses only where exit codes, signals, process races or hash seeds matter.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cytocompare import hookimpl
from cytocompare.cli import cli
from cytocompare.config import load_protocol
from cytocompare.errors import CytocompareError, DataError
from cytocompare.locking import DirectoryLock, DirectoryLockedError
from cytocompare.rundir import RunDir
from cytocompare.runner import Runner
from cytocompare.testing.datasets import make_cell
from tests.plugins.dummy import ImageMajorityClassifier, MajorityClassifier, MeanColour

ROOT = Path(__file__).resolve().parents[1]
LOOKS = {"BLA": (0.2, (90, 40, 140)), "LYT": (0.32, (60, 30, 110)), "NGS": (0.12, (120, 60, 170))}


# ---------------------------------------------------------------------------- test plugins
class Failing(ImageMajorityClassifier):
    """Fails inside fit with an error cytocompare does not know."""

    def fit(self, images, y):
        raise ValueError("the solver diverged (a bug of the plugin)")


class Interrupting(ImageMajorityClassifier):
    """Ctrl-C inside the first fit, then normal."""

    armed = True

    def fit(self, images, y):
        if type(self).armed:
            type(self).armed = False
            raise KeyboardInterrupt
        return super().fit(images, y)


class FlaggingMeanColour(MeanColour):
    """Mean R, G, B of an image; says which rows failed (a blank image: every mean above 250)."""

    def failure_reasons(self, F, images=None):
        return ["blank image (every channel mean above 250)" if row.min() > 250 else None for row in F]


class Plugin:
    @hookimpl
    def register_feature_extractors(self, register):
        register("mean-colour", FlaggingMeanColour, description="mean colour; flags blank images")

    @hookimpl
    def register_classifiers(self, register):
        register("majority", ImageMajorityClassifier, description="most frequent class")
        register("majority-f", MajorityClassifier, description="most frequent class, on features")
        register("failing", Failing, description="fails in fit")
        register("interrupting", Interrupting, description="Ctrl-C in its first fit")


# ---------------------------------------------------------------------------- helpers
PROTOCOL = """\
version: 1
name: rel
seed: {seed}
data: {{path: {data}, image_size: [32, 32], on_bad_file: {on_bad}}}
splits:
  ho: {{kind: holdout, test_size: 0.3}}
methods:
  m:
    classifier: {{name: {clf}}}
    splits: [ho]
reports: {reports}
n_jobs: {n_jobs}
cache_dir: {cache}
# synthetic cells differ only by noise: a perceptual hash rightly calls them near-duplicates
near_duplicates: {{threshold: null}}
"""


def make_data(root: Path, n: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for cls, (frac, nuc) in LOOKS.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(make_cell(32, frac, nuc, (225, 180, 200), rng)).save(root / cls / f"{cls}_{i:03d}.png")
    return root


def add_bad_files(data: Path, n: int) -> list[str]:
    names = []
    for i in range(n):
        p = data / "BLA" / f"BLA_bad{i}.png"
        p.write_bytes(b"not an image at all")
        names.append(p.name)
    return names


def write_protocol(tmp: Path, data: Path, *, clf: str = "majority", seed: int = 7, on_bad: str = "skip",
                   reports: str = "[]", n_jobs: int = 1, name: str = "p.yaml") -> Path:
    p = tmp / name
    p.write_text(PROTOCOL.format(data=data, clf=clf, seed=seed, on_bad=on_bad, reports=reports, n_jobs=n_jobs,
                                 cache=tmp / "cache"))
    return p


def runner(protocol: Path, out: Path, log=None) -> Runner:
    return Runner(load_protocol(protocol), out, protocol_path=protocol, log=log or (lambda m: None))


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def cli_run(*args: str):
    return CliRunner().invoke(cli, ["run", *args])


@pytest.fixture
def reg(isolated_registry):
    return isolated_registry(Plugin())


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_data(tmp_path / "data")


# ---------------------------------------------------------------------------- 5. the lock
def test_a_held_run_directory_is_refused_naming_the_holder_and_nothing_is_written(tmp_path, reg, data):
    out = tmp_path / "run"
    protocol = write_protocol(tmp_path, data)
    with DirectoryLock(out, what="run directory", command="cytocompare run other.yaml"):
        with pytest.raises(DirectoryLockedError) as err:
            runner(protocol, out).run()
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing of the run
    message = str(err.value)
    assert f"process {os.getpid()}" in message and socket.gethostname() in message
    assert "cytocompare run other.yaml" in message and "since" in message
    # through the CLI: one line, exit code != 0
    with DirectoryLock(out, what="run directory"):
        result = cli_run(str(protocol), "-o", str(out))
    assert result.exit_code == 2 and "is in use" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    # released after the run, and the "not empty" check never counted it
    runner(protocol, out).run()
    assert not (out / ".lock").exists() and RunDir(out).info["status"] == "finished"


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, reg, data):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "2026-01-01T00:00:00+00:00",
                                           "command": "cytocompare run (killed)", "token": "x"}))
    (out / ".lock.0123abcd.tmp").write_text("left by kill -9")  # scratch files are not "someone's files"
    runner(write_protocol(tmp_path, data), out).run()
    assert RunDir(out).info["status"] == "finished" and not (out / ".lock").exists()


RACER = """\
import os, sys, time
from pathlib import Path
from cytocompare.config import validate_protocol
from cytocompare.cli import main
protocol, out, barrier = sys.argv[1], sys.argv[2], Path(sys.argv[3])
validate_protocol(protocol)  # import every module the check needs before the start line
(barrier / f"ready.{os.getpid()}").touch()
deadline = time.time() + 60
while len(list(barrier.iterdir())) < 2 and time.time() < deadline:  # both ready: go
    time.sleep(0.0005)
sys.argv = ["cytocompare", "run", protocol, "-o", out]
main()
"""


def test_two_runs_started_at_the_same_moment_into_one_folder(tmp_path):
    """Two real processes, released by one clock: one runs, the other gets the lock error; the
    finished folder is of one protocol only (issue 8: seed 42's protocol.yaml, seed 43's results)."""
    data = make_data(tmp_path / "data")
    out = tmp_path / "run"
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    protocols = [write_protocol(tmp_path, data, clf="colour-logreg", seed=s, name=f"seed{s}.yaml") for s in (42, 43)]
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, str(script), str(p), str(out), str(barrier)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in protocols]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    winners = [i for i, (rc, _, _) in enumerate(results) if rc == 0]
    assert len(winners) == 1, results
    loser_rc, _, loser_err = results[1 - winners[0]]
    assert loser_rc == 2 and "is in use: the run directory is locked by process" in loser_err, loser_err
    assert "Traceback" not in loser_err and "cytocompare run" in loser_err
    seed = (42, 43)[winners[0]]
    import yaml

    assert yaml.safe_load((out / "protocol.yaml").read_text())["seed"] == seed
    assert json.loads((out / "splits.json").read_text())["seed"] == seed
    assert RunDir(out).info["status"] == "finished" and RunDir(out).completed() == [("m", "ho", 0)]
    assert not (out / ".lock").exists()


# ---------------------------------------------------------------------------- 6. checks before writes
def test_a_refused_resume_writes_nothing(tmp_path, reg, data):
    out = tmp_path / "run"
    protocol = write_protocol(tmp_path, data)
    add_bad_files(data, 1)  # so that skipped.csv has a row
    runner(protocol, out).run()
    before = snapshot(out)
    Image.open(data / "LYT" / "LYT_001.png").rotate(90).save(data / "BLA" / "BLA_late.png")
    with pytest.raises(CytocompareError, match="the data changed"):
        runner(protocol, out).run()
    after = snapshot(out)
    for name in ("dataset.csv", "skipped.csv", "splits.csv", "splits.json", "run.json", "protocol.yaml"):
        assert after[name] == before[name], name
    assert after == before


# ---------------------------------------------------------------------------- 7. a failed start is reusable
def test_a_folder_left_by_a_stop_on_bad_files_is_reused_by_the_same_command(tmp_path, reg, data):
    out = tmp_path / "run"
    protocol = write_protocol(tmp_path, data, on_bad="stop")
    bad = add_bad_files(data, 2)
    first = cli_run(str(protocol), "-o", str(out))
    assert first.exit_code == 2 and bad[0] in first.output
    assert RunDir(out).info["status"] == "failed"
    for name in bad:
        (data / "BLA" / name).unlink()
    again = cli_run(str(protocol), "-o", str(out))
    assert again.exit_code == 0, again.output
    assert RunDir(out).info["status"] == "finished" and RunDir(out).info["error"] is None
    assert (out / "skipped.csv").read_text().strip() == "path,cause"  # the earlier list is gone


def test_a_folder_left_by_ctrl_c_during_the_data_check_is_reused(tmp_path, reg, data, monkeypatch):
    import cytocompare.datasets as datasets

    out = tmp_path / "run"
    protocol = write_protocol(tmp_path, data)
    real = datasets.load_dataset

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets, "load_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner(protocol, out).run()
    assert RunDir(out).info["status"] == "interrupted"
    monkeypatch.setattr(datasets, "load_dataset", real)
    runner(protocol, out).run()
    assert RunDir(out).info["status"] == "finished"


def test_a_folder_with_only_early_files_starts_afresh_and_anything_else_is_refused(tmp_path, reg, data):
    out = tmp_path / "run"
    out.mkdir()
    (out / "skipped.csv").write_text("path,cause\r\nx.png,bad\r\n")  # what an older version left
    (out / "error.log").write_text("Traceback ...")
    runner(write_protocol(tmp_path, data), out).run()
    assert RunDir(out).info["status"] == "finished" and not (out / "error.log").exists()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "my-notes.txt").write_text("mine")
    with pytest.raises(CytocompareError, match=r"not a cytocompare run directory \(it holds my-notes.txt\)"):
        runner(write_protocol(tmp_path, data), other).run()
    assert sorted(p.name for p in other.iterdir()) == ["my-notes.txt"]


def test_a_failed_run_without_results_restarts_even_under_a_fixed_protocol(tmp_path, reg, data):
    out = tmp_path / "run"
    with pytest.raises(ValueError):
        runner(write_protocol(tmp_path, data, clf="failing"), out).run()
    assert RunDir(out).info["status"] == "failed"
    runner(write_protocol(tmp_path, data, clf="majority"), out).run()  # another protocol: nothing was lost
    info = RunDir(out).info
    assert info["status"] == "finished" and list(info["methods"]["m"]["components"]["classifier"].values())[0] == "majority"


# ---------------------------------------------------------------------------- 8. stop mode names every file
def test_stop_mode_writes_every_bad_file_to_skipped_csv(tmp_path, reg, data):
    out = tmp_path / "run"
    bad = add_bad_files(data, 7)
    with pytest.raises(DataError) as err:
        runner(write_protocol(tmp_path, data, on_bad="stop"), out).run()
    message = str(err.value)
    assert "and 2 more" in message and str(out / "skipped.csv") in message
    listed = RunDir(out).read_csv("skipped.csv")
    assert sorted(Path(r["path"]).name for r in listed) == sorted(bad)
    assert all(r["cause"] for r in listed)
    assert not (out / "dataset.csv").exists()


def test_stop_mode_in_a_finished_run_lists_every_file_and_leaves_the_run(tmp_path, reg, data):
    out = tmp_path / "run"
    protocol = write_protocol(tmp_path, data, on_bad="stop")
    runner(protocol, out).run()
    before = snapshot(out)
    bad = add_bad_files(data, 7)
    with pytest.raises(DataError) as err:
        runner(protocol, out).run()
    assert all(name in str(err.value) for name in bad)
    assert snapshot(out) == before


# ---------------------------------------------------------------------------- 9, 10. failures are recorded; one line
def test_an_unexpected_error_is_one_line_naming_the_traceback_and_run_json_says_failed(tmp_path, reg, data):
    out = tmp_path / "run"
    result = cli_run(str(write_protocol(tmp_path, data, clf="failing")), "-o", str(out))
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert lines == [f"Error: unexpected ValueError: the solver diverged (a bug of the plugin) "
                     f"(the full traceback is in {out / 'error.log'})"]
    assert "Traceback" not in result.output
    assert "Traceback" in (out / "error.log").read_text() and "diverged" in (out / "error.log").read_text()
    info = RunDir(out).info
    assert info["status"] == "failed"
    assert info["error"]["type"] == "ValueError" and "diverged" in info["error"]["message"]
    assert info["error"]["traceback"] == str(out / "error.log")


def test_a_cytocompare_error_during_the_run_is_recorded_in_run_json(tmp_path, reg, data, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(Runner, "_evaluate_and_report", lambda self, rd: (_ for _ in ()).throw(
        CytocompareError("evaluator 'x' needs scores")))
    with pytest.raises(CytocompareError):
        runner(write_protocol(tmp_path, data), out).run()
    info = RunDir(out).info
    assert info["status"] == "failed" and info["error"]["message"] == "evaluator 'x' needs scores"
    assert info["error"]["traceback"] is None and not (out / "error.log").exists()


def test_an_unwritable_run_directory_is_one_line(tmp_path, reg, data, monkeypatch):
    protocol = write_protocol(tmp_path, data)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = cli_run(str(protocol), "-o", str(blocker / "run"))  # a folder inside a file
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"cannot write the run directory {blocker / 'run'}" in result.output
    # permissions (the tests run as root, where chmod stops nothing): as the OS reports them
    denied = tmp_path / "denied"

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(denied))

    monkeypatch.setattr(DirectoryLock, "acquire", refuse)
    result = cli_run(str(protocol), "-o", str(denied))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: cannot write the run directory {denied}: Permission denied; choose a folder you can write with --output")


def test_an_unwritable_cache_is_one_line_before_any_data_is_read(tmp_path, data):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    protocol = tmp_path / "f.yaml"
    protocol.write_text(write_protocol(tmp_path, data).read_text()
                        .replace("classifier: {name: majority}",
                                 "features: {name: colour-stats}\n    classifier: {name: svm-rbf, params: {param_grid: null}}")
                        .replace(f"cache_dir: {tmp_path / 'cache'}", f"cache_dir: {blocker / 'cache'}"))
    out = tmp_path / "run"
    result = cli_run(str(protocol), "-o", str(out))
    assert result.exit_code == 2, result.output
    assert f"cannot write the feature cache {blocker / 'cache'}" in result.output
    assert "Traceback" not in result.output
    assert "[data]" not in result.output and not (out / "dataset.csv").exists()
    assert RunDir(out).info["status"] == "failed"


# ---------------------------------------------------------------------------- the protocol's on_feature_failure
@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_feature_failures_are_recorded_and_the_policy_applied(tmp_path, reg, data, policy):
    white = data / "BLA" / "BLA_white.png"
    Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(white)
    protocol = tmp_path / "f.yaml"
    protocol.write_text(write_protocol(tmp_path, data).read_text().replace(
        "classifier: {name: majority}",
        f"features: {{name: mean-colour}}\n    classifier: {{name: majority-f}}\n    on_feature_failure: {policy}"))
    out = tmp_path / "run"
    run = runner(protocol, out)
    if policy == "stop":
        with pytest.raises(DataError, match="BLA_white.png"):
            run.run()
        assert RunDir(out).info["status"] == "failed" and not RunDir(out).completed()
    else:
        run.run()
        index = next(int(r["index"]) for r in RunDir(out).read_csv("dataset.csv") if r["path"] == str(white))
        plan = RunDir(out).read_split_plan()
        assert index in plan.folds("ho")[0].train or index in plan.folds("ho")[0].test
        fold, predictions = plan.folds("ho")[0], RunDir(out).read_predictions("m", "ho", 0)
        assert index not in predictions.images  # neither tested nor trained on
        assert predictions.info["n_train"] + predictions.info["n_test"] == len(fold.train) + len(fold.test) - 1
    rows = RunDir(out).read_csv("feature_failures.csv")
    assert [(r["path"], r["method"], r["cause"].split(" (")[0]) for r in rows] == [(str(white), "m", "blank image")]
    assert rows[0]["action"] == {"skip": "skipped", "stop": "stopped the run"}[policy]


# ---------------------------------------------------------------------------- 11. Ctrl-C
def test_ctrl_c_exits_130_saying_the_same_command_resumes(tmp_path, reg, data):
    out = tmp_path / "run"
    protocol = write_protocol(tmp_path, data, clf="interrupting")
    Interrupting.armed = True
    result = cli_run(str(protocol), "-o", str(out))
    assert result.exit_code == 130
    assert f"rerunning the same command resumes: cytocompare run {protocol} -o {out}" in result.output
    assert RunDir(out).info["status"] == "interrupted"
    again = cli_run(str(protocol), "-o", str(out))
    assert again.exit_code == 0 and RunDir(out).info["status"] == "finished"


SIGINT_CHILD = """\
import sys, time
import numpy as np
from cytocompare import BaseComponent, hookimpl, plugins

class Blocking(BaseComponent):
    input = "images"
    def __init__(self, ready=""):
        self.ready = ready
    def fit(self, images, y):
        open(self.ready, "w").close()
        time.sleep(60)

class P:
    @hookimpl
    def register_classifiers(self, register):
        register("blocking", Blocking)

plugins.set_plugin_manager(plugins.make_plugin_manager(entry_points=False, extra_plugins=[P()]))
from cytocompare.cli import main
sys.argv = ["cytocompare", "run", sys.argv[1], "-o", sys.argv[2]]
main()
"""


def test_a_real_sigint_exits_130(tmp_path, data):
    ready = tmp_path / "ready"
    protocol = tmp_path / "p.yaml"
    protocol.write_text(write_protocol(tmp_path, data).read_text().replace(
        "classifier: {name: majority}", f"classifier: {{name: blocking, params: {{ready: '{ready}'}}}}"))
    script = tmp_path / "child.py"
    script.write_text(SIGINT_CHILD)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(protocol), str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert ready.exists(), proc.communicate(timeout=10)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "rerunning the same command resumes" in err and "Traceback" not in err
    assert RunDir(out).info["status"] == "interrupted" and not (out / ".lock").exists()


# ---------------------------------------------------------------------------- 14. which protocol changes block resume
def test_result_neutral_changes_resume_and_a_refusal_names_the_changed_keys(tmp_path, reg, data):
    out = tmp_path / "run"
    runner(write_protocol(tmp_path, data), out).run()
    before = RunDir(out).read_predictions("m", "ho", 0).prediction
    logs: list[str] = []
    result = runner(write_protocol(tmp_path, data, n_jobs=2, reports="[html]"), out, logs.append).run()
    assert result.folds_resumed == 1 and result.folds_done == 0
    assert any("resuming" in m for m in logs)
    assert (RunDir(out).read_predictions("m", "ho", 0).prediction == before).all()
    with pytest.raises(CytocompareError) as err:
        runner(write_protocol(tmp_path, data, seed=8, clf="failing"), out).run()
    message = str(err.value)
    assert "different protocol" in message and "seed" in message and "methods.m.classifier.name" in message
    assert "n_jobs" not in message and "reports" not in message


# ---------------------------------------------------------------------------- 15. permissions
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_results_are_written_with_the_umask(tmp_path, reg, data, umask, mode):
    out = tmp_path / "run"
    old = os.umask(umask)
    try:
        runner(write_protocol(tmp_path, data, reports="[html]"), out).run()
    finally:
        os.umask(old)
    files = [out / n for n in ("run.json", "protocol.yaml", "plugins.json", "dataset.csv", "skipped.csv",
                               "splits.csv", "splits.json", "index.html", "predictions/m/ho/fold-0.csv",
                               "predictions/m/ho/fold-0.json")] + list((out / "metrics").glob("*"))
    assert {str(f.relative_to(out)): oct(f.stat().st_mode & 0o777) for f in files} == {
        str(f.relative_to(out)): oct(mode) for f in files}


# ---------------------------------------------------------------------------- 16. deterministic run.json
def test_tolerated_pairs_are_sorted(tmp_path, reg, data):
    out = tmp_path / "run"
    runner(write_protocol(tmp_path, data), out).run()
    pairs = RunDir(out).info["tolerated_pairs"]
    assert pairs and pairs == sorted(pairs) and all(p == sorted(p) for p in pairs)


def test_two_runs_under_different_hash_seeds_write_the_same_run_json(tmp_path):
    data = make_data(tmp_path / "data")
    protocol = write_protocol(tmp_path, data, clf="colour-logreg")
    infos = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"run{hash_seed}"
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        subprocess.run([sys.executable, "-m", "cytocompare", "run", str(protocol), "-o", str(out)], cwd=tmp_path,
                       env=env, check=True, capture_output=True, timeout=120)
        info = json.loads((out / "run.json").read_text())
        for key in ("started", "finished"):
            info.pop(key)
        infos.append(info)
    assert infos[0] == infos[1]
    assert json.dumps(infos[0], indent=2) == json.dumps(infos[1], indent=2)  # the same order too
