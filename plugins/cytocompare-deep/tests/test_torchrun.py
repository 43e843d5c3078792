"""``torchrun -m cytocompare run``: 2 gloo processes train each fold of a tiny CNN with
DistributedDataParallel, rank 0 alone writes, and a run whose rank was killed resumes (issue 9.2).

The runs are real launches (``python -m torch.distributed.run --standalone``) in subprocesses, on
30 bundled cells at 32 px; the rank is killed with SIGKILL, found among the launcher's children by
its ``RANK`` environment variable (Linux ``/proc``).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cytocompare_deep import distributed, training

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "cytocompare" / "sample_data" / "matek-bm-sample"
CLASSES = ("BLA", "EOS", "LYT")
N_PER_CLASS = 10
EPOCHS = 4

PROTOCOL = """\
version: 1
name: ddp
seed: 3
data: {{path: {data}, image_size: [250, 250]}}
splits:
  cv3: {{kind: kfold, n_splits: 3}}
methods:
  cnn:
    classifier:
      name: sequential-cnn
      params: {{epochs: {epochs}, samples_per_class: 64, batch_size: 16, input_size: 32, device: cpu,
               num_workers: 0, augment: true, stain: hed}}
    splits: [cv3]
    artifacts: false
reports: []
n_jobs: 1
near_duplicates: {{threshold: null}}
"""

linux_only = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank through /proc")


# ---------------------------------------------------------------------------- the sharding, in memory
@pytest.mark.parametrize("world", [1, 2, 4])
def test_the_ranks_shards_make_up_the_single_process_batches(world):
    """Each global step's rows over all ranks are exactly the rows one process would use."""
    y = np.array([0] * 7 + [1] * 30 + [2] * 3)
    bs, steps = 8, 5
    order = training.epoch_indices(y, 3, 16, seed=5, epoch=2)[: steps * bs]
    groups = [distributed.Group(r, world, torch.device("cpu")) for r in range(world)]
    rows = groups[0].local_batch(bs)
    shards = [g.shard(order) for g in groups]
    assert sum(len(s) for s in shards) == len(order)
    for s in range(steps):
        together = np.concatenate([shard[s * rows : (s + 1) * rows] for shard in shards])
        assert sorted(together.tolist()) == sorted(order[s * bs : (s + 1) * bs].tolist())


def test_a_global_batch_the_ranks_cannot_split_is_refused():
    with pytest.raises(distributed.DistributedError, match="multiple of 3"):
        distributed.Group(0, 3, torch.device("cpu")).local_batch(16)


# ---------------------------------------------------------------------------- real launches
def _data(root: Path) -> Path:
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for path in sorted((SAMPLE / cls).glob("*.jpg"))[:N_PER_CLASS]:
            shutil.copy(path, root / cls / path.name)
    return root


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    # one thread per process (what torchrun sets for its workers), a cache of the test's own
    return env | {"OMP_NUM_THREADS": "1", "CYTOCOMPARE_CACHE": str(tmp / "cache"), "PYTHONUNBUFFERED": "1"}


def _command(world: int, protocol: Path, out: Path) -> list[str]:
    run = ["-m", "cytocompare", "run", str(protocol), "-o", str(out)]
    if world == 1:
        return [sys.executable, *run]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world), "--standalone", *run]


def _launch(world: int, protocol: Path, out: Path, tmp: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(_command(world, protocol, out), cwd=tmp, env=_env(tmp), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return log.read_text()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rank_pid(launcher: int, rank: int) -> int | None:
    for pid in _descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:  # the launcher itself has no RANK: the tests removed it
            return pid
    return None


def _folds(out: Path) -> dict[int, tuple[list[dict[str, str]], dict]]:
    """fold -> (its prediction rows, its fold JSON); every file of predictions/ accounted for."""
    folder = out / "predictions" / "cnn" / "cv3"
    names = sorted(p.name for p in folder.iterdir())
    ks = sorted({int(n.split("-")[1].split(".")[0]) for n in names})
    assert names == sorted(f"fold-{k}.{ext}" for k in ks for ext in ("csv", "json")), names
    result = {}
    for k in ks:
        with (folder / f"fold-{k}.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        result[k] = (rows, json.loads((folder / f"fold-{k}.json").read_text()))
    return result


def _kill_rank_inside_fold(proc: subprocess.Popen, ckpt: Path, rank: int, log: Path) -> int:
    """Wait for the fold's first checkpoint, SIGKILL ``rank``; the epoch the checkpoint holds."""
    deadline = time.time() + 600
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert ckpt.exists(), _finish(proc, log, timeout=5)
    pid = _rank_pid(proc.pid, rank)
    assert pid is not None, f"rank {rank} not found among the launcher's processes"
    os.kill(pid, signal.SIGKILL)
    text = _finish(proc, log)
    assert proc.returncode != 0, text  # torchrun reports the dead rank and stops the others
    return int(torch.load(ckpt, weights_only=True)["epoch"])


def _launch_two_and_kill(tmp: Path, fold: int, rank: int, log: Path) -> tuple[Path, Path, Path, int]:
    """Write the protocol, launch 2 ranks and kill ``rank`` inside ``fold`` after its first checkpoint.

    Returns the protocol, the run folder, the fold's checkpoint and the epoch it was killed after.
    """
    protocol = tmp / "p.yaml"
    protocol.write_text(PROTOCOL.format(data=_data(tmp / "data"), epochs=EPOCHS))
    out = tmp / "run"
    proc = _launch(2, protocol, out, tmp, log)
    ckpt = out / "checkpoints" / "cnn" / "cv3" / f"fold{fold}" / "last.pt"
    return protocol, out, ckpt, _kill_rank_inside_fold(proc, ckpt, rank=rank, log=log)


def _check_complete(out: Path) -> dict[int, tuple[list[dict[str, str]], dict]]:
    """Every fold written once; together the folds test each image exactly once."""
    folds = _folds(out)
    assert sorted(folds) == [0, 1, 2]
    tested = [row["path"] for rows, _ in folds.values() for row in rows]
    assert len(tested) == len(set(tested)) == len(CLASSES) * N_PER_CLASS
    for rows, info in folds.values():
        assert info["n_test"] == len(rows) and info["fit_report"]["epochs_completed"] == EPOCHS
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert not (out / "checkpoints" / "cnn" / "cv3").exists() or not any((out / "checkpoints" / "cnn" / "cv3").iterdir())
    assert not (out / ".lock").exists()
    return folds


@linux_only
def test_two_gloo_ranks_train_each_fold_and_a_killed_rank_resumes_in_one_process(tmp_path):
    # 2 ranks: fold 0 trains across both; rank 1 is killed inside fold 1, after its first checkpoint
    protocol, out, ckpt, epoch = _launch_two_and_kill(tmp_path, fold=1, rank=1, log=tmp_path / "ddp.log")
    assert 1 <= epoch < EPOCHS
    done = _folds(out)
    assert sorted(done) == [0], "only fold 0 was finished before the kill"
    rows0, info0 = done[0]
    assert info0["fit_report"]["world_size"] == 2 and info0["fit_report"]["epochs_completed"] == EPOCHS
    assert len({r["path"] for r in rows0}) == len(rows0) == info0["n_test"] == N_PER_CLASS

    # the same command in one process (another world size): fold 0 kept, fold 1 resumed inside, fold 2 run
    log1 = tmp_path / "one.log"
    text = _finish(_launch(1, protocol, out, tmp_path, log1), log1)
    assert "1 fold(s) resumed" in text and "2 fold(s) run" in text, text
    assert f"resumed from {ckpt} after epoch {epoch}/{EPOCHS}" in text, text
    folds = _check_complete(out)
    assert folds[0][1] == info0  # the finished fold was not redone
    assert folds[1][1]["fit_report"]["world_size"] == 1 and folds[2][1]["fit_report"]["world_size"] == 1


@pytest.mark.slow
@linux_only
def test_a_killed_rank_resumes_with_the_same_world_size(tmp_path):
    # the writing rank, this time
    protocol, out, ckpt, epoch = _launch_two_and_kill(tmp_path, fold=0, rank=0, log=tmp_path / "first.log")
    assert not (out / "predictions").exists() or not list((out / "predictions").rglob("*.csv"))
    log2 = tmp_path / "second.log"
    text = _finish(_launch(2, protocol, out, tmp_path, log2), log2)
    assert f"resumed from {ckpt} after epoch {epoch}/{EPOCHS}" in text, text
    assert "3 fold(s) run" in text and text.count("finished: ") == 1, text  # one rank says it
    folds = _check_complete(out)
    assert all(info["fit_report"]["world_size"] == 2 for _, info in folds.values())
