import numpy as np
import pytest

from cytocompare import ImageSet
from cytocompare.colour import ColourMap, LabStats, lab_to_rgb, rgb_to_lab

# scikit-image (installed with the classical plugin) is only the reference for the conversion
skimage_color = pytest.importorskip("skimage.color")
lab2rgb, rgb2lab = skimage_color.lab2rgb, skimage_color.rgb2lab


def test_lab_matches_skimage_and_round_trips():
    rgb = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    lab = rgb_to_lab(rgb)
    np.testing.assert_allclose(lab, rgb2lab(rgb), atol=0.05)
    back = lab_to_rgb(lab)
    assert np.abs(back.astype(int) - rgb.astype(int)).max() <= 1
    np.testing.assert_allclose(lab_to_rgb(rgb2lab(rgb)), np.clip(np.rint(lab2rgb(rgb2lab(rgb)) * 255), 0, 255), atol=1)


def _set(tint, seed):
    rng = np.random.default_rng(seed)
    arrays = [np.clip(rng.normal(128, 30, (16, 16, 3)) + tint, 0, 255).astype(np.uint8) for _ in range(10)]
    return ImageSet.from_arrays(arrays, ["A"] * 10)


def test_dataset_level_map_matches_target_statistics():
    train, external = _set((0, 0, 0), 1), _set((40, -20, 10), 2)
    cmap = ColourMap(LabStats.of(external), LabStats.of(train))
    external.colour_map = cmap
    mapped = LabStats.of(external)
    target = LabStats.of(train)
    np.testing.assert_allclose(mapped.mean, target.mean, atol=1.5)
    np.testing.assert_allclose(mapped.std, target.std, rtol=0.1)
    # one map for the whole set: two images of the same colour stay the same colour
    a = np.full((4, 4, 3), 100, np.uint8)
    np.testing.assert_array_equal(cmap(a), cmap(a.copy()))


def test_colour_map_changes_the_content_key():
    images = _set((0, 0, 0), 3)
    before = images.content_keys.copy()
    images.colour_map = ColourMap(LabStats.of(images), LabStats.of(_set((30, 0, 0), 4)))
    assert not set(before) & set(images.content_keys)
    assert images.subset([0, 1]).colour_map is images.colour_map


def test_only_test_data_can_be_normalised():
    from cytocompare.config import parse_protocol
    from cytocompare.errors import ProtocolError

    text = """
version: 1
name: t
data: {path: x, colour_normalize: reinhard}
splits: {cv: {kind: kfold}}
methods: {m: {classifier: {name: colour-logreg}, splits: [cv]}}
"""
    with pytest.raises(ProtocolError, match="only test_data"):
        parse_protocol(text)
