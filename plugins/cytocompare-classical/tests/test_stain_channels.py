"""The opt-in Giemsa stain channels (features/stain.py): Beer-Lambert cells of known stain
amounts, invariance to the lab's lamp and background tint, and the default set left as it was."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import color

import cytocompare_classical.features as F
from cytocompare.feature_cache import extractor_key
from cytocompare_classical.extractor import HandcraftedFeatures
from cytocompare_classical.features.stain import (
    OD_MAX, STAIN_CHANNELS, background_rgb, stain_channels, stain_feature_settings, stain_od,
)
from cytocompare_classical.segmentation import segment_cell

SIZE = 160
LAVENDER = np.array([232.0, 226.0, 246.0])  # a Matek-like background
PEACH = np.array([254.0, 229.0, 203.0])  # a PBC-like background


def _disc(cy: float, cx: float, r: float) -> np.ndarray:
    y, x = np.ogrid[:SIZE, :SIZE]
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def stain_amounts(seed: int = 0) -> np.ndarray:
    """(SIZE, SIZE, 2) OD of methyl blue and eosin: a violet nucleus with a chromatin pattern, a
    lilac cytoplasm with eosin granules, an unstained background."""
    rng = np.random.default_rng(seed)
    od = np.zeros((SIZE, SIZE, 2))
    c = SIZE / 2
    cell, nucleus = _disc(c, c, 45), _disc(c + 2, c - 3, 24)
    y, x = np.mgrid[:SIZE, :SIZE]
    od[cell] = (0.35, 0.25)
    od[nucleus, 0] = (1.1 + 0.35 * np.sin(x / 3.0) * np.cos(y / 4.0))[nucleus]
    od[nucleus, 1] = 0.8
    granules = cell & ~nucleus & (rng.random((SIZE, SIZE)) < 0.15)
    od[granules, 1] += 0.6
    return od


def compose(od: np.ndarray, background: np.ndarray) -> np.ndarray:
    """uint8 RGB of the stain amounts under a lamp of colour ``background`` (Beer-Lambert)."""
    third = np.zeros(od.shape[:2] + (1,))
    # combine_stains takes amounts in separate_stains' units (OD / -log(1e-6))
    transmitted = color.combine_stains(np.concatenate([od, third], -1) / -np.log(1e-6), color.rgb_from_bex)
    return np.clip(np.rint(transmitted * background), 0, 255).astype(np.uint8)


def test_od_recovers_the_composed_amounts() -> None:
    od = stain_amounts()
    for background in (np.full(3, 255.0), LAVENDER, PEACH):
        rgb = compose(od, background)
        found = stain_od(rgb, background)
        for k in range(2):
            assert np.corrcoef(found[..., k].ravel(), od[..., k].ravel())[0, 1] > 0.995
        # 8-bit rounding of the darkest nucleus pixels (~40 of 255) costs ~0.03 OD, +1 in the log too
        assert np.abs(found - od).max() < 0.08
        assert np.abs(found - od).mean() < 0.01


def test_background_is_the_image_background() -> None:
    od = stain_amounts()
    rgb = compose(od, PEACH)
    cell = od.sum(-1) > 0
    assert np.abs(background_rgb(rgb, cell) - PEACH).max() <= 1.0
    assert np.abs(background_rgb(rgb) - PEACH).max() <= 1.0  # without a mask: still the brightest
    # a cell filling the whole image leaves no background: white, as in skimage's rgb2hed
    assert np.array_equal(background_rgb(rgb, np.ones(rgb.shape[:2], bool)), np.full(3, 255.0))


def test_channels_are_scaled_od_and_ordered() -> None:
    od = stain_amounts()
    rgb = compose(od, LAVENDER)
    ch = stain_channels(rgb, ["eosin_od", "methylblue_od"], LAVENDER)
    assert list(ch) == ["eosin_od", "methylblue_od"]
    for name, k in (("methylblue_od", 0), ("eosin_od", 1)):
        assert ch[name].dtype == np.float32 and ch[name].min() >= 0 and ch[name].max() <= 1
        np.testing.assert_allclose(ch[name] * OD_MAX, od[..., k], atol=0.08)
    with pytest.raises(KeyError, match="not stain channels"):
        stain_channels(rgb, ["red"], LAVENDER)
    with pytest.raises(ValueError, match="background must be three values"):
        stain_od(rgb, (255, 255))


def _intensity_rows(rgb: np.ndarray, seg: object, fs: F.FeatureSet) -> dict[str, float]:
    ctx = F.build_context(rgb, seg, fs)
    fam = fs.family("intensity")
    return dict(zip(fam.names(), fam.compute(ctx)))


def test_a_change_of_lamp_and_tint_moves_the_stain_features_much_less_than_rgb() -> None:
    """The same cell under a Matek-like and a dimmer PBC-like light: every RGB value is multiplied
    per channel (the background goes from lavender to peach); the OD channels are relative to
    the image's own background, so their features barely move."""
    od = stain_amounts()
    before, after = compose(od, LAVENDER), compose(od, PEACH * 0.85)
    seg = segment_cell(before)
    assert seg.ok, seg.reason
    assert segment_cell(after).ok
    fs = F.feature_set("full", {"intensity": {"channels": ["red", "green", "blue", *STAIN_CHANNELS]}})
    a, b = _intensity_rows(before, seg, fs), _intensity_rows(after, seg, fs)  # the same masks: colour only

    def median_change(channels: tuple[str, ...]) -> float:
        # kurtosis is unbounded (not in channel units like the others): left out of the median
        names = [n for n in a if n.split(".")[1] in channels and n.split(".")[3] != "kurtosis"]
        return float(np.median([abs(a[n] - b[n]) for n in names]))

    rgb_change, stain_change = median_change(("red", "green", "blue")), median_change(tuple(STAIN_CHANNELS))
    assert rgb_change > 0.02  # the lamp change is large for RGB features
    assert stain_change < 0.1 * rgb_change, (stain_change, rgb_change)
    # the nucleus's mean methyl-blue OD is the composed one in both images
    for row in (a, b):
        found = row["nucleus.methylblue_od.intensity.mean"] * OD_MAX
        assert found == pytest.approx(od[seg.nucleus, 0].mean(), abs=0.03)


def test_the_default_set_is_unchanged_and_uses_no_stain_channel() -> None:
    for profile in F.PROFILE_NAMES:
        fs = F.feature_set(profile)
        assert not set(fs.channels_needed()) & set(STAIN_CHANNELS)
        assert not any(n.split(".")[1] in STAIN_CHANNELS for n in fs.names() if n.count(".") >= 2)
    assert len(F.feature_names("full")) == 6120
    # a new extractor parameter would change every default cache key (its repr is in the key):
    # the option is a value of the existing feature_settings, so the parameters stay these
    assert sorted(HandcraftedFeatures().get_params()) == [
        "feature_settings", "mask_dir", "n_jobs", "on_segmentation_failure", "profile", "segmentation"]


def test_the_option_names_its_features_and_is_part_of_the_cache_key() -> None:
    settings = stain_feature_settings(families=["intensity", "haralick"])
    assert settings["intensity"]["channels"][-2:] == ["methylblue_od", "eosin_od"]
    opted = HandcraftedFeatures(feature_settings=settings)
    names = opted.get_feature_names_out()
    assert names[:5] == F.feature_names("full")[:5]
    assert "nucleus.methylblue_od.intensity.mean" in names
    assert "cytoplasm.eosin_od.haralick_d1.contrast_mean" in names
    assert len(names) == 6120 + 3 * 2 * 23 + 3 * 2 * 3 * 26  # 3 masks, 2 channels; 23 statistics, 3 distances x 26
    keys = {extractor_key(HandcraftedFeatures()), extractor_key(opted),
            extractor_key(HandcraftedFeatures(feature_settings=stain_feature_settings(families=["intensity"])))}
    assert len(keys) == 3
    assert extractor_key(HandcraftedFeatures()) == extractor_key(HandcraftedFeatures(feature_settings=None))


def test_the_option_computes_finite_features_end_to_end() -> None:
    rgb = compose(stain_amounts(), PEACH)
    fs = F.feature_set("quick", stain_feature_settings("quick"))
    row, seg = F.compute_features(rgb, fs)
    assert seg.ok and np.isfinite(row).all()
    named = dict(zip(fs.names(), row))
    assert named["nucleus.methylblue_od.intensity.mean"] > 2 * named["cytoplasm.methylblue_od.intensity.mean"]
    assert named["cytoplasm.eosin_od.intensity.p95"] > named["cytoplasm.eosin_od.intensity.p50"]  # the granules


@pytest.mark.parametrize(("settings", "message"), [
    ({"intensity": {"channels": ["red", "hematoxylin_od"]}},
     r"intensity\.channels unknown channel\(s\) \['hematoxylin_od'\].*opt-in stain channels.*'methylblue_od'"),
    ({"haralick": {"channels": ["eosin_od", "eosin_od"]}}, r"haralick\.channels lists a channel twice"),
    ({"intensity": {"channels": "eosin_od"}}, r"intensity\.channels must be a list of channel names"),
])
def test_bad_channel_values_are_named(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HandcraftedFeatures(feature_settings=settings).validate_params()


def test_stain_feature_settings_refuses_families_without_channels() -> None:
    with pytest.raises(ValueError, match=r"\['shape'\] take no 'channels' setting"):
        stain_feature_settings(families=["shape"])
    with pytest.raises(ValueError, match="unknown feature profile"):
        stain_feature_settings("slow")


def test_the_documented_yaml_turns_the_channels_on() -> None:
    import re

    import yaml

    from cytocompare_classical.features.stain import DOCS

    block = re.search(r"```yaml\n(.*?)```", DOCS, re.S)
    assert block, "the stain section lost its YAML example"
    params = yaml.safe_load(block.group(1))["features"]["params"]
    names = HandcraftedFeatures(**params).get_feature_names_out()
    assert "nucleus.methylblue_od.intensity.mean" in names and "cell.eosin_od.hist16.bin15" in names
    assert len(names) == 6120 + 3 * 2 * (23 + 16)  # 3 masks x 2 channels x (23 statistics + 16 bins)
