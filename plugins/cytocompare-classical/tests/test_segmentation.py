"""Segmentation: synthetic cells with known masks, failure modes, and real MGG images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cytocompare_classical import segmentation as S
from cytocompare_classical.segmentation import Segmentation, SegmentationParams, save_masks, segment_cell

BACKGROUND = (235, 228, 232)
CYTOPLASM = (200, 170, 225)  # pale lilac
NUCLEUS = (90, 40, 150)  # dark violet
ERYTHROCYTE = (215, 160, 170)  # pink, no nucleus


def _disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def synthetic_cell(seed: int = 0, size: int = 250) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A central cell plus an off-centre distractor cell; returns (rgb, nucleus, cell) truth."""
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.float64)
    img[:] = BACKGROUND
    c = size / 2
    cell = _disc((size, size), c, c, 55)
    nuc = _disc((size, size), c + 3, c - 2, 30)
    img[cell] = CYTOPLASM
    img[nuc] = NUCLEUS
    other_cell = _disc((size, size), 30, 215, 35)
    img[other_cell] = CYTOPLASM
    img[_disc((size, size), 30, 215, 20)] = NUCLEUS
    img[_disc((size, size), 215, 40, 25)] = ERYTHROCYTE
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), nuc, cell


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_central_nucleus_found_not_distractor() -> None:
    rgb, nuc, cell = synthetic_cell()
    seg = segment_cell(rgb)
    assert seg.ok, seg.reason
    assert iou(seg.nucleus, nuc) > 0.8
    assert iou(seg.cell, cell) > 0.7
    assert not seg.nucleus[30, 215]  # the distractor's nucleus is not part of it
    assert np.array_equal(seg.cell, seg.nucleus | seg.cytoplasm)
    assert not (seg.nucleus & seg.cytoplasm).any()


def test_multilobed_nucleus_is_merged() -> None:
    rgb, _, _ = synthetic_cell()
    img = rgb.copy()
    img[_disc(img.shape[:2], 125, 125, 30)] = CYTOPLASM
    lobes = [_disc(img.shape[:2], 125, 100, 12), _disc(img.shape[:2], 125, 130, 12), _disc(img.shape[:2], 150, 118, 11)]
    for lobe in lobes:
        img[lobe] = NUCLEUS
    seg = segment_cell(img)
    assert seg.ok
    assert seg.n_nucleus_fragments == 3
    assert iou(seg.nucleus, lobes[0] | lobes[1] | lobes[2]) > 0.7


@pytest.mark.parametrize(
    "image, words",
    [
        (np.full((250, 250, 3), 230, np.uint8), "contrast"),
        (np.zeros((250, 250, 3), np.uint8), "contrast"),
        (np.zeros((8, 8, 3), np.uint8), "small"),
    ],
    ids=["blank", "black", "tiny"],
)
def test_failures_are_reported_not_raised(image: np.ndarray, words: str) -> None:
    seg = segment_cell(image)
    assert not seg.ok
    assert words in seg.reason
    assert seg.nucleus.shape == image.shape[:2] and not seg.cell.any()


def test_erythrocytes_only_is_flagged() -> None:
    img = np.empty((250, 250, 3), np.uint8)
    img[:] = BACKGROUND
    for cy, cx in ((125, 125), (60, 60), (190, 170)):
        img[_disc(img.shape[:2], cy, cx, 30)] = ERYTHROCYTE
    seg = segment_cell(img)
    assert not seg.ok
    assert "violet" in seg.reason


def test_save_masks_writes_png(tmp_path: Path) -> None:
    from PIL import Image

    rgb, _, _ = synthetic_cell()
    out = save_masks(rgb, segment_cell(rgb), tmp_path / "m.png")
    with Image.open(out) as im:
        assert im.size == (500, 250)


def test_real_images_mostly_segment(shared_data: Path, tmp_path: Path) -> None:
    """2 images per class of the shared MGG subset (7 classes): nearly all give a central nucleus."""
    from cytocompare.images import read_image

    root = shared_data / "matek-bm"
    results: list[Segmentation] = []
    for cls in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for path in sorted((root / cls).glob("*.jpg"))[:2]:
            rgb = read_image(path)
            seg = segment_cell(rgb)
            results.append(seg)
            if seg.ok:
                # the chosen nucleus is near the centre and plausibly sized
                assert seg.centre_distance < 60, path
                assert 150 < seg.nucleus.sum() < 0.8 * rgb.shape[0] * rgb.shape[1], path
    assert len(results) == 14
    assert sum(s.ok for s in results) >= 12


# ------------------------------------------------------------------------------ the named steps


def test_green_thresholds_split_nucleus_from_background() -> None:
    rgb, nuc, cell = synthetic_cell()
    green, violet = S.smoothed_green_and_violet(rgb, 1.0)
    t_nuc, t_bg = S.green_thresholds(green, min_contrast=30.0)
    assert green[nuc].mean() < t_nuc < green[cell & ~nuc].mean() < t_bg < green[~cell].mean()
    assert violet[nuc].mean() > 60 and abs(violet[~cell & ~_disc(nuc.shape, 30, 215, 35)]).mean() < 15
    with pytest.raises(S._Failed, match="no contrast"):
        S.green_thresholds(green, min_contrast=1000.0)


def test_candidates_then_central_component_then_lobes() -> None:
    rgb, nuc, _ = synthetic_cell()
    p = SegmentationParams()
    green, violet = S.smoothed_green_and_violet(rgb, p.smoothing_sigma)
    t_nuc, _ = S.green_thresholds(green, p.min_contrast)
    cand, labels, n, areas, keep = S.nucleus_candidates(green, violet, t_nuc, p, 1.0)
    assert n == 2 and keep.all()  # the central nucleus and the distractor's; the erythrocyte is not violet
    centre = S.centre_distance(rgb.shape[:2])
    assert centre[124, 124] == pytest.approx(np.hypot(0.5, 0.5))
    chosen = S.central_component(labels, n, areas, keep, centre, 1.0)
    assert iou(labels == chosen, nuc) > 0.8
    # the distractor is ~120 px away: merged only when the radius reaches it
    nucleus, merged = S.merge_lobes(labels, n, keep, chosen, 12.0)
    assert merged.sum() == 1 and np.array_equal(nucleus, labels == chosen)
    _, merged_far = S.merge_lobes(labels, n, keep, chosen, 200.0)
    assert merged_far.all()
    # a larger minimum area drops both candidates
    with pytest.raises(S._Failed, match="larger than"):
        S.nucleus_candidates(green, violet, t_nuc, SegmentationParams(min_nucleus_area=5000.0), 1.0)


def test_central_component_prefers_the_larger_of_equally_near() -> None:
    labels = np.zeros((50, 50), int)
    labels[20:30, 20:25] = 1  # both touch the centre (24.5, 24.5)
    labels[20:30, 25:33] = 2
    areas = np.array([50.0, 80.0])
    centre = S.centre_distance(labels.shape)
    assert S.central_component(labels, 2, areas, np.array([True, True]), centre, 1.0) == 2
    assert S.central_component(labels, 2, areas, np.array([True, False]), centre, 1.0) == 1


def test_cytoplasm_stays_in_the_cells_territory() -> None:
    rgb, nuc, cell = synthetic_cell()
    p = SegmentationParams()
    green, violet = S.smoothed_green_and_violet(rgb, p.smoothing_sigma)
    t_nuc, t_bg = S.green_thresholds(green, p.min_contrast)
    cand, labels, n, areas, keep = S.nucleus_candidates(green, violet, t_nuc, p, 1.0)
    chosen = S.central_component(labels, n, areas, keep, S.centre_distance(rgb.shape[:2]), 1.0)
    nucleus, merged = S.merge_lobes(labels, n, keep, chosen, p.merge_radius)
    cyto, whole = S.cytoplasm_and_cell(green, violet, cand, labels, keep, merged, nucleus, t_bg, p, 1.0)
    assert iou(whole, cell) > 0.7 and not (cyto & nucleus).any() and np.array_equal(whole, cyto | nucleus)
    assert not whole[30, 215] and not whole[30, 185]  # the neighbour cell's nucleus and cytoplasm
    narrow = SegmentationParams(max_cytoplasm_width=10.0)
    cyto10, _ = S.cytoplasm_and_cell(green, violet, cand, labels, keep, merged, nucleus, t_bg, narrow, 1.0)
    assert 0 < cyto10.sum() < 0.6 * cyto.sum()


# ------------------------------------------------------------------------------ parameters


def test_default_parameters_are_the_documented_thresholds() -> None:
    p = SegmentationParams()
    assert (p.min_violet, p.min_contrast, p.merge_radius, p.max_cytoplasm_width) == (25.0, 30.0, 12.0, 70.0)
    assert p.cytoplasm_violet_range == (30.0, 60.0)
    rgb, _, _ = synthetic_cell()
    a, b = segment_cell(rgb), segment_cell(rgb, {"min_violet": 25})
    assert np.array_equal(a.cell, b.cell) and np.array_equal(a.nucleus, b.nucleus)


def test_parameters_take_effect() -> None:
    rgb, _, _ = synthetic_cell()
    seg = segment_cell(rgb, {"min_violet": 200})
    assert not seg.ok and "B - G >= 200" in seg.reason
    small = segment_cell(rgb, SegmentationParams(max_cytoplasm_width=10.0))
    assert small.ok and small.cytoplasm.sum() < 0.6 * segment_cell(rgb).cytoplasm.sum()


@pytest.mark.parametrize(
    "params, match",
    [
        ({"min_violett": 20}, r"unknown segmentation parameter\(s\) 'min_violett'; valid: min_contrast"),
        ({"min_violet": "high"}, r"min_violet must be a number >= 0, got 'high'"),
        ({"merge_radius": -1}, r"merge_radius must be a number >= 0"),
        ({"cytoplasm_violet_range": [60, 30]}, r"cytoplasm_violet_range must be \[low, high\]"),
        ([("min_violet", 20)], r"must be a mapping"),
    ],
    ids=["unknown", "type", "negative", "range", "not-a-mapping"],
)
def test_bad_parameters_are_named(params: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SegmentationParams.from_mapping(params)  # type: ignore[arg-type]
    from cytocompare_classical.extractor import HandcraftedFeatures

    with pytest.raises(ValueError, match=match):
        HandcraftedFeatures(profile="quick", segmentation=params).fit(None)  # type: ignore[arg-type]


def test_extractor_passes_segmentation_parameters() -> None:
    from cytocompare.images import ImageSet
    from cytocompare_classical.extractor import HandcraftedFeatures

    rgb, _, _ = synthetic_cell(2, size=120)
    images = ImageSet.from_arrays([rgb], ["A"])
    ext = HandcraftedFeatures(profile="quick", segmentation={"min_violet": 200})
    X = ext.fit(images).transform(images)
    assert X[0, ext.feature_names_.index("qc.segmentation_ok")] == 0
    assert "B - G >= 200" in ext.failures_[0][2]
    assert HandcraftedFeatures(profile="quick").fit(images).transform(images)[0, 0] == 1


# ------------------------------------------------------------------------------ neighbours (issue 10)


def _touching_neighbour(size: int = 250) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A central cell whose nucleus touches a neighbour's nucleus (a dense marrow smear)."""
    shape = (size, size)
    img = np.empty((*shape, 3), np.float64)
    img[:] = BACKGROUND
    c = size / 2
    cell, nuc = _disc(shape, c, c, 50), _disc(shape, c, c, 32)
    # a large neighbour nucleus whose centroid lies 80 px out (beyond lobe_reach, 75 px)
    neighbour_cell, neighbour_nuc = _disc(shape, c, c + 100, 62), _disc(shape, c, c + 80, 50)
    img[cell | neighbour_cell] = CYTOPLASM
    img[nuc | neighbour_nuc] = NUCLEUS  # the two nuclei touch (gap < 0): one connected blob
    rng = np.random.default_rng(3)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), nuc, neighbour_nuc


def test_touching_neighbour_nucleus_is_not_taken() -> None:
    rgb, nuc, neighbour = _touching_neighbour()
    green, violet = S.smoothed_green_and_violet(rgb, 1.0)
    t_nuc, _ = S.green_thresholds(green, 30.0)
    cand, labels, n, *_ = S.nucleus_candidates(green, violet, t_nuc, SegmentationParams(), 1.0)
    assert n == 1  # the precondition: thresholding alone gives one blob of both nuclei
    seg = segment_cell(rgb)
    assert seg.ok
    assert iou(seg.nucleus, nuc) > 0.8
    assert (seg.nucleus & neighbour & ~nuc).sum() < 0.1 * (neighbour & ~nuc).sum()
    assert not seg.cell[125, 125 + 110]  # the neighbour's far side


def test_off_centre_object_is_ignored() -> None:
    rgb, nuc, cell = synthetic_cell()
    img = rgb.copy()
    img[_disc(img.shape[:2], 200, 200, 28)] = NUCLEUS  # a free nucleus in a corner, 12 px gap to nothing
    seg = segment_cell(img)
    assert iou(seg.nucleus, nuc) > 0.8 and not seg.nucleus[200, 200] and not seg.cell[200, 200]


def test_lobes_join_in_a_chain_but_not_beyond_reach() -> None:
    labels = np.zeros((100, 100), int)
    labels[45:55, 45:55] = 1  # central
    labels[45:55, 62:70] = 2  # 7 px from 1
    labels[45:55, 77:85] = 3  # 7 px from 2, 22 px from 1
    keep = np.ones(3, bool)
    nucleus, merged = S.merge_lobes(labels, 3, keep, 1, radius=8.0)
    assert merged.tolist() == [True, True, True] and nucleus.sum() == 100 + 80 + 80
    _, merged = S.merge_lobes(labels, 3, keep, 1, radius=8.0, reach=25.0)  # 3's centroid is ~31 px out
    assert merged.tolist() == [True, True, False]


def test_split_touching_nuclei_cuts_two_discs_apart() -> None:
    shape = (120, 160)
    blob = _disc(shape, 60, 50, 28) | _disc(shape, 60, 105, 28)
    labels, n = S.ndi.label(blob)
    assert n == 1
    split, n2, areas, keep = S.split_touching_nuclei(blob, labels, np.array([True]), 14.0)
    assert n2 == 2 and keep.all() and split[60, 50] != split[60, 105]
    assert areas.sum() == blob.sum()


def test_smooth_mask_removes_spurs_and_holes() -> None:
    mask = _disc((80, 80), 40, 40, 20)
    ragged = mask.copy()
    ragged[40, 60:70] = True  # a 1-px spur
    ragged[38:41, 38:41] = False  # a hole
    smooth = S.smooth_mask(ragged, 2)
    assert not smooth[40, 66] and smooth[39, 39] and iou(smooth, mask) > 0.95


def test_real_cells_with_a_touching_neighbour(shared_data: Path) -> None:
    """Real cells whose old mask took a neighbour's nucleus (checked by eye, docs/segmentation.md):
    the nucleus now stays near the centre and the cell does not reach the image border."""
    from cytocompare.images import read_image

    for name in ("NGS/NGS_00252.jpg", "NGS/NGS_00418.jpg", "BLA/BLA_00825.jpg", "EOS/EOS_00284.jpg"):
        rgb = read_image(shared_data / "matek-bm" / name)
        seg = segment_cell(rgb)
        assert seg.ok, name
        ys, xs = np.nonzero(seg.nucleus)
        assert np.hypot(ys.mean() - 124.5, xs.mean() - 124.5) < 40, name
        border = np.concatenate([seg.cell[0], seg.cell[-1], seg.cell[:, 0], seg.cell[:, -1]])
        assert border.mean() < 0.15, name


# ---------------------------------------------------------------- OpenCV helpers = ndimage / skimage
# The segmentation's morphology, distance transforms and watershed are faster equivalents of the
# ndimage / skimage calls they replaced; they must give the same pixels and distances exactly.

SAMPLE = Path(__file__).resolve().parents[3] / "cytocompare" / "sample_data"


def _random_masks(n: int, seed: int) -> list[np.ndarray]:
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        h, w = rng.integers(2, 90, 2)
        m = ndi.gaussian_filter(rng.random((h, w)), rng.uniform(0.5, 6)) > rng.uniform(0.35, 0.65)
        if t % 9 == 0:
            m[:] = True  # no background: the EDT's own convention
        if t % 9 == 1:
            m[:] = False
        out.append(m)
    return out


def test_opencv_morphology_and_edt_equal_ndimage() -> None:
    from scipy import ndimage as ndi

    for i, m in enumerate(_random_masks(300, 0)):
        disk = S._disk(i % 6)
        assert np.array_equal(S.binary_opening(m, disk), ndi.binary_opening(m, structure=disk))
        assert np.array_equal(S.binary_closing(m, disk), ndi.binary_closing(m, structure=disk))
        assert np.array_equal(S.binary_erosion(m, disk), ndi.binary_erosion(m, structure=disk))
        np.testing.assert_array_equal(S.distance_transform_edt(m), ndi.distance_transform_edt(m))
    far = np.ones((250, 250), bool)
    far[0, 0] = False  # distances up to ~352: the float32 roots still give the integer squares back
    np.testing.assert_array_equal(S.distance_transform_edt(far), ndi.distance_transform_edt(far))


def test_watershed_on_the_box_equals_watershed_on_the_image() -> None:
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    rng = np.random.default_rng(1)
    for m in _random_masks(60, 2):
        image = -ndi.distance_transform_edt(m) + np.round(rng.random(m.shape), 1)  # ties as in real use
        markers = np.zeros(m.shape, np.int32)
        idx = rng.integers(0, m.size, 4)
        markers.flat[idx] = np.arange(1, 5)
        np.testing.assert_array_equal(S._watershed(image, markers, m), watershed(image, markers, mask=m))


def test_segmentation_equals_the_ndimage_implementation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real bundled cells segmented with the OpenCV helpers (and the look-up-table label
    selection, the bincount centroids) and with the ndimage / skimage / numpy calls they replaced
    (patched back in): the same masks."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    from cytocompare.images import read_image

    files = sorted((SAMPLE / "matek-bm-sample").rglob("*.jpg"))[::10]
    files += sorted((SAMPLE / "pbc-sample").rglob("*.jpg"))[::10]
    assert len(files) >= 30
    fast = [segment_cell(read_image(f)) for f in files]
    monkeypatch.setattr(S, "binary_opening", lambda m, s: ndi.binary_opening(m, structure=s))
    monkeypatch.setattr(S, "binary_closing", lambda m, s: ndi.binary_closing(m, structure=s))
    monkeypatch.setattr(S, "distance_transform_edt", ndi.distance_transform_edt)
    monkeypatch.setattr(S, "_watershed", lambda image, markers, mask: watershed(image, markers, mask=mask))
    monkeypatch.setattr(S, "labels_of", lambda labels, which: np.isin(labels, np.arange(1, which.size + 1)[which]))
    monkeypatch.setattr(S, "_centroids", lambda labels, n: np.array(
        ndi.center_of_mass(np.ones_like(labels), labels, np.arange(1, n + 1))).reshape(n, 2))
    monkeypatch.setattr(S, "_fill_holes", ndi.binary_fill_holes)
    for f, a in zip(files, fast):
        b = segment_cell(read_image(f))
        assert a.ok == b.ok, f
        for part in ("nucleus", "cytoplasm", "cell"):
            assert np.array_equal(getattr(a, part), getattr(b, part)), f"{f}: {part}"
