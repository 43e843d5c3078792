"""torchrun's environment in the core (issue 9.2): who a process is, who writes, what may run.

In this process, without torch: the ranks are played by setting torchrun's environment variables.
The real 2-process launch is plugins/cytocompare-deep/tests/test_torchrun.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cytocompare import distributed
from cytocompare.config import load_protocol
from cytocompare.errors import ProtocolError
from cytocompare.protocols import Tags
from cytocompare.rundir import RunDir
from cytocompare.runner import Runner
from cytocompare.testing.datasets import make_cell
from cytocompare.testing.plugin import make_plugin
from tests.plugins.dummy import ImageMajorityClassifier, MajorityClassifier, MeanColour

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


# ---------------------------------------------------------------------------- the launch
def test_no_torchrun_is_rank_0_of_1():
    launch = distributed.current({})
    assert launch == distributed.Launch(0, 1, 0, 1) and launch.is_main and not launch.distributed


def test_torchrun_variables_are_read():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "n1"}
    launch = distributed.current(env)
    assert launch == distributed.Launch(3, 4, 1, 2) and not launch.is_main and launch.distributed
    # a world of one (torchrun --nproc-per-node 1) runs as a plain process
    assert not distributed.current({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}).distributed


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
    ({"WORLD_SIZE": "2"}, "RANK is not set"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, r"RANK=2 is outside 0\.\.1"),
    ({"WORLD_SIZE": "4", "RANK": "1", "LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "2"}, "LOCAL_RANK=2 is outside"),
])
def test_bad_torchrun_variables_are_named(env, message):
    with pytest.raises(distributed.LaunchError, match=message):
        distributed.current(env)


# ---------------------------------------------------------------------------- the runner's ranks
class SharedTraining(ImageMajorityClassifier):
    """An image classifier that says it trains across the ranks; records the folds it is fitted on."""

    tags = Tags(deterministic=True, distributed=True)
    fits: list[tuple[str, ...]] = []

    def fit(self, images, y):
        type(self).fits.append(tuple(str(p) for p in images.paths))
        return super().fit(images, y)


def plugin():
    """The plugin of one shared-training classifier and two that run in one process."""
    return make_plugin(feature_extractors={"mean-colour": MeanColour},
                       classifiers={"shared": SharedTraining, "majority": ImageMajorityClassifier,
                                    "majority-f": MajorityClassifier})


PROTOCOL = """\
version: 1
name: dist
seed: 4
data: {{path: {data}, image_size: [32, 32]}}
splits:
  cv3: {{kind: kfold, n_splits: 3}}
  ho: {{kind: holdout, test_size: 0.3}}
methods:
{methods}
reports: []
cache_dir: {cache}
near_duplicates: {{threshold: null}}
"""
SHARED = "  deep:\n    classifier: {name: shared}\n    splits: [cv3, ho]\n"
ONE_PROCESS = ("  plain:\n    classifier: {name: majority}\n    splits: [ho]\n"
               "  feat:\n    features: {name: mean-colour}\n    classifier: {name: majority-f}\n    splits: [ho]\n")


def _protocol(tmp: Path, methods: str) -> Path:
    data = tmp / "data"
    if not data.exists():
        rng = np.random.default_rng(0)
        for cls, frac in (("BLA", 0.2), ("LYT", 0.32), ("NGS", 0.12)):
            (data / cls).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(make_cell(32, frac, (90, 40, 140), (225, 180, 200), rng)).save(data / cls / f"{i}.png")
    p = tmp / "p.yaml"
    p.write_text(PROTOCOL.format(data=data, methods=methods, cache=tmp / "cache"))
    return p


def _as_rank(monkeypatch, rank: int, world: int = 2) -> None:
    for name, value in zip(TORCHRUN_VARS, (rank, world, rank, world)):
        monkeypatch.setenv(name, str(value))


def _run(p: Path, out: Path, only: list[str] | None = None):
    return Runner(load_protocol(p), out, protocol_path=p, only=only, log=lambda m: None).run()


def test_a_follower_rank_runs_rank_0s_folds_in_order_and_writes_nothing(tmp_path, monkeypatch, isolated_registry):
    isolated_registry(plugin())
    p = _protocol(tmp_path, SHARED)
    SharedTraining.fits = []
    _as_rank(monkeypatch, 0)
    leader = _run(p, tmp_path / "run")
    leader_fits = list(SharedTraining.fits)
    assert leader.folds_done == 4 and RunDir(tmp_path / "run").info["status"] == "finished"

    SharedTraining.fits = []
    _as_rank(monkeypatch, 1)
    follower = _run(p, tmp_path / "fresh")
    assert SharedTraining.fits == leader_fits  # the same training images, fold after fold
    assert follower.folds_done == 4
    assert not (tmp_path / "fresh").exists()  # no lock, no file: rank 0 writes
    assert not (tmp_path / "cache").exists()

    # a follower of a run whose folds rank 0 finished earlier skips them, like rank 0
    SharedTraining.fits = []
    before = {q: q.stat().st_mtime_ns for q in (tmp_path / "run").rglob("*")}
    again = _run(p, tmp_path / "run")
    assert (again.folds_done, again.folds_resumed, SharedTraining.fits) == (0, 4, [])
    assert {q: q.stat().st_mtime_ns for q in (tmp_path / "run").rglob("*")} == before


def test_methods_that_cannot_train_across_ranks_are_refused_naming_them(tmp_path, monkeypatch, isolated_registry):
    isolated_registry(plugin())
    p = _protocol(tmp_path, SHARED + ONE_PROCESS)
    _as_rank(monkeypatch, 0)
    with pytest.raises(ProtocolError) as err:
        _run(p, tmp_path / "run")
    message = str(err.value)
    assert "'plain', 'feat' do not" in message and "--only deep" in message and "without torchrun" in message
    assert not (tmp_path / "run").exists()  # refused before the lock
    assert _run(p, tmp_path / "run", only=["deep"]).folds_done == 4  # the way the message gives
    # the same protocol without torchrun runs every method, into the same directory
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name)
    result = _run(p, tmp_path / "run")
    assert (result.folds_done, result.folds_resumed) == (2, 4)
