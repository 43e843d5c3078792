"""Issue 11, item 7: progress of a run; plain lines as before off a terminal, a live display on one, -q / -v."""

from __future__ import annotations

import io
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cytocompare import hookimpl, progress
from cytocompare.cli import cli
from cytocompare.config import load_protocol
from cytocompare.progress import Progress, RichProgress, is_warning, make_progress
from cytocompare.runner import Runner
from cytocompare.testing.datasets import make_cell
from tests.plugins.dummy import ImageMajorityClassifier, MajorityClassifier, MeanColour

LOOKS = {"BLA": (0.2, (90, 40, 140)), "LYT": (0.32, (60, 30, 110)), "NGS": (0.12, (120, 60, 170))}


class Plugin:
    @hookimpl
    def register_feature_extractors(self, register):
        register("mean-colour", MeanColour, description="mean colour")

    @hookimpl
    def register_classifiers(self, register):
        register("majority", ImageMajorityClassifier, description="most frequent class")
        register("majority-f", MajorityClassifier, description="most frequent class, on features")


# 2 methods: 1 + 3 folds and 3 folds = 7 folds in all
PROTOCOL = """\
version: 1
name: prog
seed: 3
data: {{path: {data}, image_size: [32, 32], on_bad_file: skip}}
splits:
  ho: {{kind: holdout, test_size: 0.3}}
  cv3: {{kind: kfold, n_splits: 3}}
methods:
  colour:
    features: {{name: mean-colour}}
    classifier: {{name: majority-f}}
    splits: [ho, cv3]
  plain:
    classifier: {{name: majority}}
    splits: [cv3]
reports: []
cache_dir: {cache}
near_duplicates: {{threshold: null}}
"""

# The lines of this run as the runner wrote them before cytocompare.progress existed (commit 5d00219,
# log=list.append), with seconds, accuracies and the temporary folder replaced.
BEFORE = """\
[features] cache TMP/cache
[data] reading training set TMP/data
[data]   checked 0/19 files
[data]   checked 19/19 files
[data]   1 file(s) not used (bad, unmapped or excluded); each is listed with its cause in skipped.csv
[data]   18 images, classes: BLA 6, LYT 6, NGS 6
[splits] plan HASH: ho (1 fold), cv3 (3 folds)
[colour | ho | fold 1/1] features (train): 0/18 images
[colour | ho | fold 1/1] features (train): 18/18 images
[colour | ho | fold 1/1] features (train): 3 per image, S
[colour | ho | fold 1/1] features: no failed cells among 18 images
[colour | ho | fold 1/1] fit on 12 images
[colour | ho | fold 1/1] fit S, predict 6 images S, accuracy A
[colour | cv3 | fold 1/3] fit on 12 images
[colour | cv3 | fold 1/3] fit S, predict 6 images S, accuracy A
[colour | cv3 | fold 2/3] fit on 12 images
[colour | cv3 | fold 2/3] fit S, predict 6 images S, accuracy A
[colour | cv3 | fold 3/3] fit on 12 images
[colour | cv3 | fold 3/3] fit S, predict 6 images S, accuracy A
[plain | cv3 | fold 1/3] fit on 12 images
[plain | cv3 | fold 1/3] fit S, predict 6 images S, accuracy A
[plain | cv3 | fold 2/3] fit on 12 images
[plain | cv3 | fold 2/3] fit S, predict 6 images S, accuracy A
[plain | cv3 | fold 3/3] fit on 12 images
[plain | cv3 | fold 3/3] fit S, predict 6 images S, accuracy A
all folds finished in S; evaluating
run directory: TMP/run
"""


def normalise(text: str, tmp: Path) -> list[str]:
    text = text.replace(str(tmp), "TMP")
    text = re.sub(r"\d+\.\d+ s\b", "S", text)
    text = re.sub(r"accuracy (\d\.\d+|nan)", "accuracy A", text)
    text = re.sub(r"plan [0-9a-f]{12}", "plan HASH", text)
    return [line for line in text.splitlines() if not line.startswith("[report]")]


@pytest.fixture
def setup(tmp_path: Path, isolated_registry):
    isolated_registry(Plugin())
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for cls, (frac, nuc) in LOOKS.items():
        (data / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(make_cell(32, frac, nuc, (225, 180, 200), rng)).save(data / cls / f"{cls}_{i:03d}.png")
    (data / "BLA" / "bad.png").write_bytes(b"not an image")  # a warning line: 1 file not used
    p = tmp_path / "p.yaml"
    p.write_text(PROTOCOL.format(data=data, cache=tmp_path / "cache"))
    return tmp_path, p


def run(tmp: Path, protocol: Path, log) -> None:
    shutil.rmtree(tmp / "run", ignore_errors=True)
    shutil.rmtree(tmp / "cache", ignore_errors=True)
    Runner(load_protocol(protocol), tmp / "run", protocol_path=protocol, log=log).run()


def test_the_plain_lines_are_those_of_before(setup):
    tmp, protocol = setup
    lines: list[str] = []
    run(tmp, protocol, lines.append)  # any callable, as before
    assert normalise("\n".join(lines), tmp) == BEFORE.splitlines()
    out = io.StringIO()
    with Progress(stream=out) as log:  # what `cytocompare run` uses off a terminal
        run(tmp, protocol, log)
    assert normalise(out.getvalue(), tmp) == BEFORE.splitlines()


def test_quiet_keeps_only_the_warnings_and_verbose_adds_detail(setup):
    tmp, protocol = setup
    out = io.StringIO()
    with Progress(progress.QUIET, stream=out) as log:
        run(tmp, protocol, log)
    assert normalise(out.getvalue(), tmp) == [
        "[data]   1 file(s) not used (bad, unmapped or excluded); each is listed with its cause in skipped.csv"]
    out = io.StringIO()
    with Progress(progress.VERBOSE, stream=out) as log:
        run(tmp, protocol, log)
    lines = normalise(out.getvalue(), tmp)
    assert set(BEFORE.splitlines()) <= set(lines)
    extra = [x for x in lines if x not in BEFORE.splitlines()]
    assert len(extra) == 7 and all(" test on 6 held-out images; method Pipeline(" in x for x in extra)


def test_which_lines_are_warnings():
    assert is_warning("[data]   warning: 3 classes have fewer than 5 images")
    assert is_warning("[skip] method 'resnext': its plugin is not installed (optional method)")
    assert is_warning("[m | ho | fold 1/1] features: 2 of 18 images failed (2 × blank); kept ...")
    assert is_warning("[m | ho | fold 1/1] artifacts skipped: No module named 'umap'")
    assert not is_warning("[m | ho | fold 1/1] features: no failed cells among 18 images")
    assert not is_warning("[m | ho | fold 1/1] fit on 12 images")
    assert not is_warning("[data]   18 images, classes: BLA 6, LYT 6, NGS 6")


def test_cli_quiet_and_verbose(setup):
    tmp, protocol = setup
    quiet = CliRunner().invoke(cli, ["run", str(protocol), "-o", str(tmp / "q"), "-q"])
    assert quiet.exit_code == 0, quiet.output
    lines = quiet.output.strip().splitlines()
    assert lines[-1].startswith("finished: 2 method(s), 7 fold(s) run, 0 fold(s) resumed")
    assert not any("fold 1/" in x for x in lines) and len(lines) == 2  # the warning and the final line
    normal = CliRunner().invoke(cli, ["run", str(protocol), "-o", str(tmp / "n")])
    assert normal.exit_code == 0 and "[plain | cv3 | fold 3/3] fit on 12 images" in normal.output
    assert "held-out images; method" not in normal.output
    verbose = CliRunner().invoke(cli, ["run", str(protocol), "-o", str(tmp / "v"), "-v"])
    assert verbose.exit_code == 0 and "[plain | cv3 | fold 3/3] test on 6 held-out images" in verbose.output


def test_make_progress_is_plain_off_a_terminal(monkeypatch):
    pytest.importorskip("rich")
    monkeypatch.setattr("sys.stderr", io.StringIO())  # no terminal
    assert type(make_progress()) is Progress
    assert isinstance(make_progress(live=True), RichProgress)


def _terminal():
    Console = pytest.importorskip("rich.console").Console
    buf = io.StringIO()
    return Console(force_terminal=True, file=buf, width=160, color_system=None), buf


def test_the_live_display_counts_folds_images_and_shows_rate_and_eta():
    console, buf = _terminal()
    with RichProgress(console=console) as p:
        counter = p.folds(7)
        counter.done(resumed=True)  # not counted in the rate
        counter.start("[m | cv3 | fold 2/3]")
        time.sleep(0.05)
        counter.done()
        counter.done()
        bar = p.throttled(5, lambda d, t: f"{d}/{t}", "[m | cv3 | fold 3/3] features (train)")
        bar(0, 400)
        time.sleep(0.05)
        bar(120, 400)
        p.live.refresh()
        screen = buf.getvalue()
        assert "folds 3/7" in screen and "[m | cv3 | fold 2/3]" in screen and "s/fold" in screen
        assert "images 120/400" in screen and "img/s" in screen
        eta = re.findall(r"ETA (\d+):(\d\d):(\d\d)", screen)
        assert len(eta) >= 2
        # images: 280 to go at about 120 / 0.05 s: well under a minute; folds: 4 at ~0.03 s each
        assert all(int(h) == 0 and int(m) == 0 for h, m, _ in eta)
        bar(400, 400)  # done: the bar goes
        assert len(p.live.tasks) == 1
        with progress.bar("[cnn] training", 64) as advance:  # the CNN loop's bar, through active()
            advance(16)
            progress.describe("[cnn] training, epoch 1/4 loss 0.6931")
            p.live.refresh()
        assert "[cnn] training, epoch 1/4 loss 0.6931" in buf.getvalue() and "images 16/64" in buf.getvalue()
        progress.say("[cnn] epoch 1/4 loss 0.6931")  # the loop's lines, above the display
    assert "[cnn] epoch 1/4 loss 0.6931" in buf.getvalue()
    assert progress.active() is None


def test_a_run_under_a_forced_terminal(setup):
    tmp, protocol = setup
    console, buf = _terminal()
    with RichProgress(console=console) as log:
        run(tmp, protocol, log)
    screen = buf.getvalue()
    assert "[plain | cv3 | fold 3/3] fit on 12 images" in screen  # the lines, above the display
    assert "folds 7/7" in screen and "ETA" in screen
    assert "features (train): 18/18 images" not in screen  # a bar instead of the progress lines
    quiet_console, quiet_buf = _terminal()
    with RichProgress(progress.QUIET, console=quiet_console) as log:
        run(tmp, protocol, log)
    assert "fit on 12 images" not in quiet_buf.getvalue() and "1 file(s) not used" in quiet_buf.getvalue()


def test_the_cnn_loop_reports_through_the_display(isolated_registry):
    torch = pytest.importorskip("torch")
    from cytocompare_deep import training

    console, buf = _terminal()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))

    class Source:
        def __init__(self, x):
            self.x = x

        def batches(self, order, bs):
            for s in range(0, len(order) - bs + 1, bs):
                yield self.x[order[s:s + bs]]

    x = torch.randint(0, 255, (16, 3, 8, 8), dtype=torch.uint8)
    y = np.array([0, 1] * 8)
    setup = training.TrainSetup(
        name="tiny", epochs=2, samples_per_class=None, batch_size=4, lr=0.01, optimizer="sgd", momentum=0.9,
        weight_decay=0.0, label_smoothing=0.0, warmup_epochs=0.0, device=torch.device("cpu"), amp_dtype=None,
        channels_last=False, compile=False, augment=None, random_state=0, deterministic=True, progress=True,
        checkpoint_dir=None, resume=False, fingerprint="x", classes=["a", "b"], params={})
    seen = []
    with RichProgress(console=console) as p:
        real = p.bar

        def spy(description, total, unit="images"):
            seen.append((description, total, unit))
            return real(description, total, unit)

        p.bar = spy
        training.train(model, setup, y, [0.5] * 3, [0.25] * 3, Source(x))
    assert seen == [("[tiny] training", 32, "images")]  # 2 epochs x 4 steps x 4 images
    assert "[tiny] epoch 2/2 loss" in buf.getvalue()
