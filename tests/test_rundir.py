"""RunDir on its own: how a directory may be claimed, the one atomic writer, stop records."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from cytocompare.errors import CytocompareError
from cytocompare.rundir import EARLY_FILES, RunDir, RunInfo, is_scratch_name


def _info(**over) -> RunInfo:
    fields = {f.name: None for f in dataclasses.fields(RunInfo)}
    return RunInfo(**fields | {"status": "running", "methods": {}, "tolerance_source": "none"} | over)


def _finished_fold(run: RunDir) -> None:
    run.write_predictions("m", "ho", 0, images=[0], paths=["a.png"], truth=["BLA"], prediction=["BLA"])


def test_claim_new_restart_resume_and_refusals(tmp_path: Path):
    run = RunDir(tmp_path / "run")
    assert run.claim("h").mode == "new"  # missing
    run.path.mkdir()
    (run.path / ".lock").write_text("{}")
    (run.path / ".run.json.abc.tmp").write_text("torn")
    assert run.claim("h").mode == "new"  # only the lock and scratch files
    (run.path / "skipped.csv").write_text("path,cause\r\n")
    assert run.claim("h").mode == "restart"  # only early files
    run.write_run_info(_info(protocol_hash="old"))
    assert run.claim("h", lambda stored: ["seed: 1 → 2"]).mode == "restart"  # a run.json but no result
    _finished_fold(run)
    assert run.claim("old").mode == "resume"
    assert run.claim("h", lambda stored: []).mode == "resume"  # only result-neutral keys changed
    with pytest.raises(CytocompareError, match=r"different protocol .*changed: seed: 1 → 2"):
        run.claim("h", lambda stored: ["seed: 1 → 2"])
    # a checkpoint of a fold in progress is a result too
    other = RunDir(tmp_path / "ckpt")
    other.write_run_info(_info(protocol_hash="old"))
    (other.checkpoint_dir("m", "ho", 0) / "last.pt").parent.mkdir(parents=True)
    (other.checkpoint_dir("m", "ho", 0) / "last.pt").write_text("x")
    with pytest.raises(CytocompareError, match="different protocol"):
        other.claim("h", lambda stored: ["seed"])


def test_claim_refuses_a_folder_of_other_files_and_a_file(tmp_path: Path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    (tmp_path / "mine" / "dataset.csv").write_text("x")
    with pytest.raises(CytocompareError, match=r"not a cytocompare run directory \(it holds notes.txt\)"):
        RunDir(tmp_path / "mine").claim("h")
    (tmp_path / "f").write_text("x")
    with pytest.raises(CytocompareError, match="is a file"):
        RunDir(tmp_path / "f").claim("h")


def test_scratch_names_and_early_files():
    assert is_scratch_name(".lock") and is_scratch_name(".lock.0a1b.tmp") and is_scratch_name(".splits.csv.x1.tmp")
    assert not is_scratch_name("notes.txt") and not is_scratch_name(".hidden")
    assert {"run.json", "skipped.csv", "splits.json", "error.log"} <= EARLY_FILES
    assert "predictions" not in EARLY_FILES


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_the_atomic_writer_respects_the_umask(tmp_path: Path, umask: int, mode: int):
    old = os.umask(umask)
    try:
        path = RunDir(tmp_path).write_text("index.html", "<html></html>")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]  # no temporary file left


def test_record_stop_keeps_the_run_and_a_later_run_clears_the_error(tmp_path: Path):
    run = RunDir(tmp_path)
    run.record_stop("failed", {"type": "DataError", "message": "3 bad files", "traceback": None},
                    protocol_name="p", protocol_hash="h")
    assert run.info["status"] == "failed" and run.info["protocol_hash"] == "h" and "at" in run.info["error"]
    run.write_run_info(_info(protocol_hash="h", labels=["BLA"]))
    run.record_stop("interrupted", {"type": "KeyboardInterrupt", "message": "m", "traceback": None},
                    protocol_name="p", protocol_hash="h")
    assert run.info["status"] == "interrupted" and run.info["labels"] == ["BLA"]
    run.write_run_info(_info(protocol_hash="h", status="finished"))
    assert run.info["status"] == "finished" and run.info["error"] is None


def test_clear_early_files_leaves_everything_else(tmp_path: Path):
    run = RunDir(tmp_path)
    for name in ("run.json", "skipped.csv", "error.log", "notes.txt"):
        (tmp_path / name).write_text("x")
    run.clear_early_files()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
