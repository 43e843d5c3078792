"""Segmentation: synthetic cells with known masks, failure modes, and real MGG images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cytocompare_classical.segmentation import Segmentation, save_masks, segment_cell

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
