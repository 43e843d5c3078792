"""The red-cell ruler (cytocompare/scale.py) on synthetic smears whose red cells have a known
diameter: whole, cut by the border, touching each other, around a white cell."""

from __future__ import annotations

import numpy as np
import pytest

from cytocompare.errors import DataError
from cytocompare.images import ImageSet
from cytocompare.scale import (
    RedCellSize,
    factor_interval,
    measure_red_cells,
    median_interval,
    red_cell_circles,
    scale_factor,
)
from cytocompare.testing.datasets import make_cell

BACKGROUND = (240, 226, 214)  # peach, like the PBC smears
RED = (205, 160, 170)
PALLOR = (222, 190, 192)
WHITE_NUCLEUS = (90, 40, 140)


def smear(size: int, diameter: float, rng: np.random.Generator, n_red: int = 6, white: bool = True,
          nucleus_rgb: tuple[int, int, int] = WHITE_NUCLEUS) -> np.ndarray:
    """A (size, size) smear: ``n_red`` pale red discs of ``diameter`` px (with a central pallor)
    at random places, free to overlap each other and the border, and a saturated white cell in
    the middle."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    img = np.empty((size, size, 3))
    img[:] = BACKGROUND
    r = diameter / 2
    centre = (size - 1) / 2
    placed = 0
    while placed < n_red:
        cy, cx = rng.uniform(-0.2 * r, size + 0.2 * r, 2)
        if white and np.hypot(cy - centre, cx - centre) < 0.2 * size + r + 3:
            continue  # red cells never on the white cell: it would hide them anyway
        d = np.hypot(yy - cy, xx - cx)
        img[d < r] = RED
        img[d < 0.35 * r] = PALLOR
        placed += 1
    if white:
        img[np.hypot(yy - centre, xx - centre) < 0.2 * size] = nucleus_rgb
    img += rng.normal(0, 4, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def smear_set(n: int, size: int, diameter: float, seed: int, **kw) -> ImageSet:
    rng = np.random.default_rng(seed)
    return ImageSet.from_arrays([smear(size, diameter, rng, **kw) for _ in range(n)], ["A"] * n)


@pytest.mark.parametrize(("size", "diameter"), [(160, 40.0), (250, 84.0), (360, 74.0)])
def test_the_median_diameter_is_recovered_within_3_percent(size, diameter):
    size_found = measure_red_cells(smear_set(20, size, diameter, seed=1), seed=0)
    assert size_found.median_px == pytest.approx(diameter, rel=0.03)
    assert size_found.n_cells >= 30 and size_found.n_images == 20
    lo, hi = size_found.median_ci95_px
    assert lo <= size_found.median_px <= hi and size_found.q1_px <= size_found.median_px <= size_found.q3_px


def test_cells_cut_by_the_border_and_touching_cells_count():
    """Where red cells crowd (bone marrow), few are whole and alone; the cut and touching ones
    carry the size too."""
    rng = np.random.default_rng(3)
    image = smear(200, 70.0, rng, n_red=9)
    circles = red_cell_circles(image)
    cut = [c for c in circles if min(c.cy, c.cx, 199 - c.cy, 199 - c.cx) < c.diameter / 2]
    assert cut, "no red cell cut by the border was measured"
    assert np.median([c.diameter for c in circles]) == pytest.approx(70.0, rel=0.04)
    # two discs overlapping by a third of their diameter: both are measured, at their own size
    two = np.full((160, 240, 3), BACKGROUND, dtype=np.float64)
    yy, xx = np.mgrid[:160, :240]
    for cx in (90, 90 + 48):
        two[np.hypot(yy - 80, xx - cx) < 36] = RED
    found = red_cell_circles(np.clip(two + rng.normal(0, 3, two.shape), 0, 255).astype(np.uint8))
    assert len(found) == 2 and all(c.diameter == pytest.approx(72, rel=0.04) for c in found)


def test_white_cells_are_not_red_cells():
    """A white cell alone (a saturated nucleus in a pale, round cytoplasm: make_cell) has a round
    outline, but its disc is not red cell."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert red_cell_circles(make_cell(120, 0.2, (90, 40, 140), (225, 170, 200), rng)) == []
    assert red_cell_circles(np.full((100, 100, 3), 230, dtype=np.uint8)) == []  # a blank field


def test_too_few_red_cells_is_a_clear_error():
    blank = ImageSet.from_arrays([smear(120, 40, np.random.default_rng(i), n_red=0) for i in range(4)], ["A"] * 4)
    with pytest.raises(DataError, match=r"test set T: only 0 red cells measured in 4 images .*fixed factor"):
        measure_red_cells(blank, what="test set T")


def test_the_sample_is_seeded_and_stops_at_enough_cells_or_images():
    images = smear_set(30, 120, 30.0, seed=2, n_red=8)
    a = measure_red_cells(images, max_images=10, seed=7, min_cells=5)
    assert a == measure_red_cells(images, max_images=10, seed=7, min_cells=5)
    assert a.n_images == 10
    assert measure_red_cells(images, max_images=10, seed=8, min_cells=5) != a  # another sample of the 30
    few = measure_red_cells(images, target_cells=12, seed=7, min_cells=5)
    assert few.n_cells >= 12 and few.n_images < 10  # the images it took until 12 cells were found


def test_the_factor_is_the_ratio_of_the_medians():
    train = measure_red_cells(smear_set(20, 250, 84.0, seed=4))
    test = measure_red_cells(smear_set(20, 360, 70.0, seed=5))
    assert scale_factor(train, test) == pytest.approx(84 / 70, rel=0.04)
    lo, hi = factor_interval(train, test)
    assert lo <= scale_factor(train, test) <= hi
    fixed = RedCellSize(80.0, 70.0, 90.0, (78.0, 82.0), 100, 10, 10)
    assert scale_factor(fixed, RedCellSize(64.0, 60.0, 70.0, (63.0, 65.0), 100, 10, 10)) == 1.25


def test_median_interval_is_the_order_statistics_around_the_median():
    v = np.arange(1, 101, dtype=float)
    lo, hi = median_interval(v)
    assert lo < 50.5 < hi and (lo, hi) == (41.0, 61.0)  # ranks 50 -+ 9.8 (sqrt(100) * 0.98)


# ------------------------------------------------------------------------------ real images
def _folder(path) -> ImageSet:
    paths = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    return ImageSet(paths, [p.parent.name for p in paths])


def test_pbc_red_cells_are_about_75_px(shared_data):
    """docs/external.md: 74.9 px over all 800 PBC images (75.3 px as a run measures it)."""
    size = measure_red_cells(_folder(shared_data / "pbc"), seed=42)
    assert size.n_cells >= 300 and size.n_images < 100  # ~7 red cells a PBC image
    assert 73.5 <= size.median_px <= 77.0


@pytest.mark.slow  # ~30 s: 1,000 bone-marrow images for ~270 red cells
def test_matek_to_pbc_factor_is_about_1_09(shared_data):
    """docs/external.md: matek-bm 81.8 px, PBC 75.3 px, factor 1.086 with seed 42."""
    train = measure_red_cells(_folder(shared_data / "matek-bm"), seed=42)
    test = measure_red_cells(_folder(shared_data / "pbc"), seed=42)
    assert train.n_cells >= 200 and 79.0 <= train.median_px <= 85.0
    assert 1.05 <= scale_factor(train, test) <= 1.13


@pytest.mark.slow  # ~13 s
def test_the_bundled_samples_have_enough_red_cells():
    """protocols/quick.yaml's data with scale: red_cells: 68 red cells in the 280 Matek cells."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "cytocompare" / "sample_data"
    train = measure_red_cells(_folder(root / "matek-bm-sample"), seed=42)
    test = measure_red_cells(_folder(root / "pbc-sample"), seed=42)
    assert train.n_cells >= 50 and 1.0 <= scale_factor(train, test) <= 1.15
