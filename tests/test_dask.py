"""The dask backend (cytocompare/compute.py) on a LocalCluster of 2 single-threaded worker processes:
the same feature store and the same results as the local backend, resume across backends, and a
worker killed in the middle of a task survived."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import distributed
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cytocompare import BaseComponent
from cytocompare.cli import cli
from cytocompare.config import load_protocol
from cytocompare.protocols import Tags
from cytocompare.rundir import RunDir
from cytocompare.runner import Runner
from cytocompare.testing.datasets import make_cell
from cytocompare.testing.plugin import make_plugin

LOOKS = {"BLA": (0.2, (90, 40, 140)), "LYT": (0.32, (60, 30, 110)), "NGS": (0.12, (120, 60, 170))}
#: the files a run's results are: every prediction and every metric (fold JSONs hold times, so they differ)
RESULT_GLOBS = ("predictions/*/*/fold-*.csv", "metrics/*.csv", "metrics/metrics.json", "table1_*.md")


def make_folder(root: Path, n: int = 10, size: int = 64) -> Path:
    rng = np.random.default_rng(0)
    for cls, (frac, nuc) in LOOKS.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(make_cell(size, frac, nuc, (225, 180, 200), rng)).save(root / cls / f"{cls}_{i:05d}.jpg")
    return root


PROTOCOL = """
version: 1
name: dask
seed: 7
data: {{path: {data}, image_size: [64, 64]}}
splits:
  cv5: {{kind: kfold, n_splits: 5}}
  ho: {{kind: holdout, test_size: 0.3}}
methods:
{methods}
n_jobs: 2
cache_dir: {cache}
near_duplicates: {{threshold: null}}
reports: [table1]
{compute}
"""

#: real components: the example plugin (an image classifier, and colour features + the RBF SVM)
#: and the classical arm with its quick profile and mRMR
REAL_METHODS = """
  colour:
    classifier: {name: colour-logreg, params: {max_iter: 300}}
    splits: [cv5, ho]
  colour-svm:
    features: {name: colour-stats}
    classifier: {name: svm-rbf, params: {param_grid: null}}
    splits: [cv5]
  classical:
    features: {name: handcrafted, params: {profile: quick}}
    selector: {name: mrmr, params: {k: 20}}
    classifier: {name: svm-rbf, params: {param_grid: null}}
    splits: [ho]
"""


def write_protocol(tmp: Path, data: Path, cache: str, methods: str = REAL_METHODS, compute: str = "") -> Path:
    path = tmp / f"protocol-{cache}.yaml"
    path.write_text(PROTOCOL.format(data=data, methods=methods, cache=tmp / cache, compute=compute))
    return path


def results(run: Path) -> dict[str, bytes]:
    files = {str(p.relative_to(run)): p.read_bytes() for g in RESULT_GLOBS for p in sorted(run.glob(g))}
    assert any(k.startswith("predictions/") for k in files) and "metrics/long.csv" in files
    return files


def feature_stores(cache: Path) -> dict[str, bytes]:
    """Every file of every extractor's store (the lock aside)."""
    return {str(p.relative_to(cache)): p.read_bytes() for p in sorted(cache.glob("*/*")) if p.name != ".lock"}


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "data")


@pytest.mark.slow
def test_dask_gives_the_local_backends_feature_store_and_results_and_resumes_across_backends(tmp_path, data):
    local, remote = tmp_path / "local", tmp_path / "dask"
    a = invoke("run", str(write_protocol(tmp_path, data, "cache-local")), "-o", str(local))
    assert a.exit_code == 0, a.output
    protocol = write_protocol(tmp_path, data, "cache-dask")
    b = invoke("run", str(protocol), "-o", str(remote), "--scheduler", "local")
    assert b.exit_code == 0, b.output
    assert "[compute] dask: a local cluster of 2 single-threaded worker processes" in b.output
    assert "3 method(s), 12 fold(s) run" in b.output

    stores = feature_stores(tmp_path / "cache-local")
    assert {Path(k).name for k in stores} == {"features.f32", "index.csv", "meta.json"}
    assert len(stores) == 3 * 2  # colour-stats and handcrafted
    assert feature_stores(tmp_path / "cache-dask") == stores  # byte for byte, rows in the same order
    assert results(remote) == results(local)

    # the compute key is result-neutral: a local run resumes in the dask run's directory, and one
    # fold removed is recomputed on the cluster, the same as before
    assert load_protocol(protocol).digest() == RunDir(remote).info["protocol_hash"]
    again = invoke("run", str(protocol), "-o", str(remote))
    assert again.exit_code == 0 and "0 fold(s) run, 12 fold(s) resumed" in again.output, again.output
    for suffix in ("csv", "json"):
        (remote / "predictions" / "classical" / "ho" / f"fold-0.{suffix}").unlink()
    redo = invoke("run", str(protocol), "-o", str(remote), "--scheduler", "local")
    assert redo.exit_code == 0 and "1 fold(s) run, 11 fold(s) resumed" in redo.output, redo.output
    assert results(remote) == results(local)


# ---------------------------------------------------------------------------- a worker killed mid-task
def _die_once(marker: str) -> None:
    """Kill this process, the first time any process gets here, if it is a dask worker: as a
    worker killed by the machine (out of memory, a pre-empted node) in the middle of a task."""
    try:
        distributed.get_worker()
    except ValueError:  # not on a worker: the local run of the same components
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


class DyingMeanColour(BaseComponent):
    """Mean R, G, B of each image; kills its worker on its first chunk."""

    tags = Tags(deterministic=True)

    def __init__(self, marker: str = "") -> None:
        self.marker = marker

    def fit(self, images, y=None):
        return self

    def get_feature_names_out(self):
        return ["r", "g", "b"]

    def transform(self, images):
        _die_once(self.marker)
        return np.array([images[i].reshape(-1, 3).mean(axis=0) for i in range(len(images))], dtype=np.float32)


class DyingNearestMean(BaseComponent):
    """Nearest class mean of the features; kills its worker in its first fit."""

    tags = Tags(deterministic=True)

    def __init__(self, marker: str = "") -> None:
        self.marker = marker

    def fit(self, X, y):
        _die_once(self.marker)
        y = np.asarray(y).astype(str)
        self.classes_ = np.unique(y)
        self.means_ = np.stack([np.asarray(X)[y == c].mean(axis=0) for c in self.classes_])
        return self

    def predict(self, X):
        d = ((np.asarray(X)[:, None, :] - self.means_[None]) ** 2).sum(axis=2)
        return self.classes_[d.argmin(axis=1)]


def dying_plugin():
    """The plugin of the two components that kill their worker once."""
    return make_plugin(feature_extractors={"dying-mean-colour": DyingMeanColour},
                       classifiers={"dying-nearest-mean": DyingNearestMean})


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["chunk", "fit"])
def test_a_worker_killed_mid_task_is_survived_and_nothing_is_lost(tmp_path, data, isolated_registry, phase):
    """One worker dies, in a feature chunk or in a fold's fit; the other kill is disarmed."""
    registry = isolated_registry(dying_plugin())
    chunk_kill, fit_kill = tmp_path / "killed-in-a-chunk", tmp_path / "killed-in-a-fit"
    methods = f"""
  m:
    features: {{name: dying-mean-colour, params: {{marker: '{chunk_kill}'}}}}
    classifier: {{name: dying-nearest-mean, params: {{marker: '{fit_kill}'}}}}
    splits: [cv5, ho]
"""
    local, remote = tmp_path / "local", tmp_path / "dask"
    Runner(load_protocol(write_protocol(tmp_path, data, "cache-local", methods)), local,
           registry=registry, log=lambda m: None).run()
    assert not chunk_kill.exists() and not fit_kill.exists()  # nothing dies outside a worker
    (fit_kill if phase == "chunk" else chunk_kill).touch()  # disarmed
    logs: list[str] = []
    protocol = write_protocol(tmp_path, data, "cache-dask", methods, "compute: {backend: dask, scheduler: local}")
    result = Runner(load_protocol(protocol), remote, registry=registry, log=logs.append).run()
    assert chunk_kill.exists() and fit_kill.exists(), logs  # the armed one did kill its worker
    assert result.folds_done == 6 and RunDir(remote).info["status"] == "finished"
    assert feature_stores(tmp_path / "cache-dask") == feature_stores(tmp_path / "cache-local")
    index = next((tmp_path / "cache-dask").glob("*/index.csv")).read_text().splitlines()
    assert len(index) == len({line.split(",")[0] for line in index}) == 30  # every image stored once
    assert results(remote) == results(local)


def test_the_compute_key_is_checked_and_result_neutral(tmp_path, data):
    from cytocompare.config import RESULT_NEUTRAL_KEYS, parse_protocol
    from cytocompare.errors import ProtocolError

    text = write_protocol(tmp_path, data, "c").read_text()
    base = parse_protocol(text)
    assert base.compute.backend == "local" and base.compute.scheduler is None
    on_dask = parse_protocol(text + "compute: {backend: dask, scheduler: 'tcp://10.0.0.1:8786'}\n")
    assert "compute" in RESULT_NEUTRAL_KEYS and on_dask.digest() == base.digest()
    with pytest.raises(ProtocolError, match="compute\n    .*backend dask needs a scheduler"):
        parse_protocol(text + "compute: {backend: dask}\n")
    with pytest.raises(ProtocolError, match="compute\n    .*is for backend: dask"):
        parse_protocol(text + "compute: {scheduler: local}\n")


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path, data, monkeypatch):
    import dask

    monkeypatch.setitem(dask.config.config["distributed"]["comm"]["timeouts"], "connect", "1s")
    protocol = write_protocol(tmp_path, data, "c")
    out = tmp_path / "run"
    result = invoke("run", str(protocol), "-o", str(out), "--scheduler", "tcp://127.0.0.1:1")
    assert result.exit_code == 2
    assert "cannot reach the dask scheduler at tcp://127.0.0.1:1 (compute.scheduler or --scheduler)" in result.output
