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


# ------------------------------------------------------------------------------ Macenko
from cytocompare.colour import StainMap, StainStats, optical_density  # noqa: E402
from cytocompare.images import ImageSet as _ImageSet  # noqa: E402

_VIOLET = np.array([0.65, 0.70, 0.29])  # the nuclear stain (absorbs red and green): bluish violet
_PINK = np.array([0.07, 0.99, 0.11])  # eosin: absorbs green


def _stained_set(violet, pink, n=6, seed=0, strength=1.0):
    """Synthetic smears composed by Beer-Lambert from two known stain vectors."""
    rng = np.random.default_rng(seed)
    vecs = np.stack([violet / np.linalg.norm(violet), pink / np.linalg.norm(pink)])
    arrays = []
    for _ in range(n):
        amounts = np.zeros((48, 48, 2))
        amounts[..., 1] = rng.uniform(0.0, 0.8, (48, 48)) * (rng.random((48, 48)) < 0.6)  # erythrocytes
        amounts[14:34, 14:34, 0] = rng.uniform(0.6, 1.4, (20, 20))  # a nucleus
        od = (amounts * strength) @ vecs
        arrays.append(np.clip(np.rint(255.0 * np.exp(-od) - 1.0), 0, 255).astype(np.uint8))
    return _ImageSet.from_arrays(arrays, ["LYT"] * n), vecs


def _angle(a, b):
    return np.degrees(np.arccos(np.clip(abs(np.dot(a, b)) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))


def test_macenko_recovers_known_stain_vectors_like_skimage_separation():
    from skimage.color import separate_stains

    images, vecs = _stained_set(_VIOLET, _PINK)
    stats = StainStats.of(images)
    assert _angle(stats.vectors[0], vecs[0]) < 5 and _angle(stats.vectors[1], vecs[1]) < 5
    # the amounts under the estimated vectors agree with scikit-image's separation by the true matrix
    conv = np.linalg.inv(np.stack([vecs[0], vecs[1], np.cross(vecs[0], vecs[1])]))
    ref = separate_stains(images[0], conv)[..., 0]
    ours = (optical_density(images[0]).reshape(-1, 3) @ np.linalg.pinv(np.asarray(stats.vectors).T).T)[:, 0]
    assert np.corrcoef(ref.ravel(), ours)[0, 1] > 0.99


def test_macenko_onto_itself_is_nearly_the_identity():
    images, _ = _stained_set(_VIOLET, _PINK)
    stats = StainStats.of(images)
    mapped = StainMap(stats, stats)(images[1])
    assert np.abs(mapped.astype(int) - images[1].astype(int)).mean() < 2.0


def test_macenko_takes_another_labs_stains_to_the_training_colours():
    train, _ = _stained_set(_VIOLET, _PINK, seed=1)
    other, _ = _stained_set(np.array([0.45, 0.75, 0.48]), np.array([0.20, 0.95, 0.25]), seed=1, strength=0.6)
    stain_map = StainMap(StainStats.of(other), StainStats.of(train))
    before = np.abs(other[0].astype(int) - train[0].astype(int)).mean()
    after = np.abs(stain_map(other[0]).astype(int) - train[0].astype(int)).mean()
    assert after < before / 3
    key = stain_map.key()
    assert key.startswith("macenko:") and key != StainMap(StainStats.of(train), StainStats.of(train)).key()


def test_macenko_needs_stained_pixels():
    blank = _ImageSet.from_arrays([np.full((8, 8, 3), 250, np.uint8)], ["LYT"])
    with pytest.raises(ValueError, match="too few"):
        StainStats.of(blank)


def test_macenko_pairs_the_stains_by_similarity_not_by_order():
    train, _ = _stained_set(_VIOLET, _PINK, seed=2)
    stats = StainStats.of(train)
    swapped = StainStats(stats.vectors[::-1], stats.max_amount[::-1])
    np.testing.assert_array_equal(StainMap(swapped, stats)(train[0]), StainMap(stats, stats)(train[0]))


def _giemsa_set(n=6, seed=0, scale=1.0):
    """Smears composed by scikit-image's combine_stains with its Giemsa matrix (rgb_from_bex:
    methyl blue, eosin): nuclei of methyl blue on a field of eosin-stained erythrocytes."""
    from skimage.color import combine_stains, rgb_from_bex

    rng = np.random.default_rng(seed)
    arrays = []
    for _ in range(n):
        stains = np.zeros((48, 48, 3))
        stains[..., 1] = rng.uniform(0, 0.06, (48, 48)) * (rng.random((48, 48)) < 0.6) * scale
        stains[14:34, 14:34, 0] = rng.uniform(0.05, 0.12, (20, 20)) * scale
        arrays.append(np.clip(np.rint(combine_stains(stains, rgb_from_bex) * 255), 0, 255).astype(np.uint8))
    return _ImageSet.from_arrays(arrays, ["LYT"] * n), rgb_from_bex[:2]


def test_macenko_recovers_the_giemsa_vectors_of_skimage_combine_stains():
    images, known = _giemsa_set()
    stats = StainStats.of(images)
    # each estimated vector within 3 degrees of one of the two known ones, one each
    angles = np.array([[_angle(v, k) for k in known] for v in stats.vectors])
    assert sorted(angles.argmin(axis=1).tolist()) == [0, 1] and angles.min(axis=1).max() < 3
    # a paler lab (a third less stain) mapped onto this one comes out in this one's colours
    pale, _ = _giemsa_set(seed=1, scale=0.6)
    target, _ = _giemsa_set(seed=1)
    stain_map = StainMap(StainStats.of(pale), stats)
    before = np.abs(pale[0].astype(int) - target[0].astype(int)).mean()
    after = np.abs(stain_map(pale[0]).astype(int) - target[0].astype(int)).mean()
    assert after < before / 3
