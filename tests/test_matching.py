"""Matching an external test set to the training set (cytocompare/matching.py): the scale factor
(fixed or measured on red cells), the colour map, what the test ImageSet gets, and what a run
writes (test_matching.json, the log)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cytocompare.config import DataSpec, parse_protocol
from cytocompare.errors import DataError
from cytocompare.images import ImageSet
from cytocompare.matching import match_test_set
from tests.test_runner_scenarios import read_csv, run, write_protocol
from tests.test_scale import smear

NUCLEI = {"BLA": (90, 40, 140), "LYT": (40, 60, 150)}  # saturated: white cells, not red ones


def write_smears(root: Path, size: int, diameter: float, n: int, seed: int) -> Path:
    """``n`` smears per class (``<CLS>/<CLS>_<i>.png``) whose red cells are ``diameter`` px."""
    rng = np.random.default_rng(seed)
    for cls, nucleus in NUCLEI.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(smear(size, diameter, rng, nucleus_rgb=nucleus)).save(root / cls / f"{cls}_{i:03d}.png")
    return root


def files(root: Path) -> ImageSet:
    paths = sorted(root.glob("*/*.png"))
    return ImageSet(paths, [p.parent.name for p in paths])


@pytest.fixture(scope="module")
def two_scales(tmp_path_factory) -> tuple[Path, Path]:
    """Training smears at 160 px with 48 px red cells; test smears at 200 px with 40 px ones
    (their pixels 1.2 times as large)."""
    root = tmp_path_factory.mktemp("scales")
    return write_smears(root / "train", 160, 48.0, 10, seed=0), write_smears(root / "test", 200, 40.0, 10, seed=1)


def test_red_cells_measure_the_factor_and_set_it_on_the_test_set(two_scales):
    train, test = files(two_scales[0]), files(two_scales[1])
    test.crop = (160, 160)
    before = test.content_keys.copy()
    spec = DataSpec(path="t", scale="red_cells", center_crop=(160, 160))
    lines: list[str] = []
    m = match_test_set(train, test, spec, seed=3, log=lines.append)
    assert m.scale_factor == pytest.approx(1.2, rel=0.03)
    assert test.scale == m.scale_factor and train.scale is None and train.colour_map is None
    assert m.train_scale.median_px == pytest.approx(48, rel=0.03)
    assert m.test_scale.median_px == pytest.approx(40, rel=0.03)
    # rescaled 200 -> 240 px, then cropped; subsets keep the factor
    assert test[0].shape == (160, 160, 3) and test.subset([0, 1]).scale == m.scale_factor
    assert any(f"rescaled by {m.scale_factor}" in line for line in lines)
    # the factor is part of every feature-cache key of the test images
    assert not set(test.content_keys) & set(before)
    other = files(two_scales[1])
    other.crop, other.scale = (160, 160), m.scale_factor + 0.01
    assert not set(other.content_keys) & set(test.content_keys)
    out = m.to_dict()
    assert out["scale"]["setting"] == "red_cells" and out["scale"]["factor"] == m.scale_factor
    assert out["scale"]["training"]["n_cells"] == m.train_scale.n_cells >= 30
    assert out["colour"] == {"method": "none"}


def test_a_fixed_factor_and_the_colour_map_of_the_rescaled_images(two_scales):
    train, test = files(two_scales[0]), files(two_scales[1])
    test.crop = (160, 160)
    m = match_test_set(train, test, DataSpec(path="t", scale=1.25, center_crop=(160, 160),
                                             colour_normalize="reinhard"), seed=0)
    assert (m.scale_factor, test.scale, m.train_scale) == (1.25, 1.25, None)
    assert test.colour_map is m.colour_map and m.colour_map.key().startswith("reinhard:")
    out = json.loads(json.dumps(m.to_dict()))  # plain JSON
    assert out["colour"]["method"] == "reinhard" and len(out["colour"]["source"]["mean"]) == 3
    assert out["colour"]["key"] == m.colour_map.key()
    # the colour statistics are those of the images as the model sees them (rescaled, cropped)
    unscaled = files(two_scales[1])
    unscaled.crop = (160, 160)
    plain = match_test_set(train, unscaled, DataSpec(path="t", center_crop=(160, 160), colour_normalize="reinhard"),
                           seed=0)
    assert plain.colour_map.source != m.colour_map.source and plain.scale_factor is None


def test_too_few_red_cells_name_the_set(tmp_path):
    blank = tmp_path / "blank" / "BLA"
    blank.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(smear(100, 30, np.random.default_rng(i), n_red=0)).save(blank / f"BLA_{i}.png")
    train = files(write_smears(tmp_path / "train", 160, 48.0, 10, seed=0))
    with pytest.raises(DataError, match=rf"test set {blank}: only 0 red cells .* fixed factor"):
        match_test_set(train, files(tmp_path / "blank"), DataSpec(path="t", scale="red_cells"), seed=0)


@pytest.mark.parametrize(("value", "message"), [
    ("redcells", "expected none, red_cells or a factor"),
    ("-1", "expected none, red_cells or a factor"),
    ("30", "expected none, red_cells or a factor"),
    ("yes", "expected none, red_cells or a factor"),
])
def test_bad_scale_values_are_named(value, message):
    text = ("version: 1\nname: t\ndata: {path: x}\ntest_data: {path: y, scale: %s}\n"
            "splits: {e: {kind: external}}\nmethods: {m: {classifier: {name: c}, splits: [e]}}\n")
    with pytest.raises(Exception, match=message) as info:
        parse_protocol(text % value)
    assert "test_data.scale" in str(info.value)


def test_scale_words_and_the_digest():
    base = ("version: 1\nname: t\ndata: {path: x}\ntest_data: {path: y%s}\n"
            "splits: {e: {kind: external}}\nmethods: {m: {classifier: {name: c}, splits: [e]}}\n")
    absent, none = parse_protocol(base % ""), parse_protocol(base % ", scale: none")
    measured, fixed = parse_protocol(base % ", scale: red_cells"), parse_protocol(base % ", scale: 1.3")
    assert none.test_data.scale is None and absent.digest() == none.digest()
    assert measured.test_data.scale == "red_cells" and measured.test_data.fixed_scale is None
    assert fixed.test_data.fixed_scale == 1.3
    assert len({absent.digest(), measured.digest(), fixed.digest()}) == 3
    with pytest.raises(Exception, match="only test_data can be rescaled"):
        parse_protocol(base.replace("data: {path: x}", "data: {path: x, scale: red_cells}") % "")
    with pytest.raises(Exception, match="use center_crop .* instead of resize"):
        parse_protocol(base % ", scale: red_cells, resize: [100, 100]")


def test_a_run_writes_test_matching_json_and_logs_the_factor(tmp_path: Path, two_scales):
    train, test = two_scales
    protocol = write_protocol(
        tmp_path, train, {"ext": "{kind: external}"},
        extra=f"test_data: {{path: {test}, scale: red_cells, center_crop: [160, 160], colour_normalize: reinhard}}\n")
    protocol.write_text(protocol.read_text().replace("image_size: [64, 64]", "image_size: [160, 160]"))
    out = tmp_path / "run"
    result = run(str(protocol), "-o", str(out))
    matching = json.loads((out / "test_matching.json").read_text())
    factor = matching["scale"]["factor"]
    assert factor == pytest.approx(1.2, rel=0.03)
    assert f"test set rescaled by {factor} (test_data.scale: red_cells" in result.output
    assert "median red-cell diameter" in result.output
    assert matching["scale"]["test"]["n_images"] == 20 and matching["seed"] == 5
    assert matching["colour"]["method"] == "reinhard"
    assert len(read_csv(out / "predictions" / "colour" / "ext" / "fold-0.csv")) == 20
