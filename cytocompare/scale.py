"""A data set's pixel scale, measured on its red blood cells.

Two labs' microscopes give a cell different sizes in pixels, and neither data set states its
micrometres per pixel (``shared/notes/anchors-external.md`` §1). Normal red cells are all about
the same size (7-8 µm), so the median red-cell diameter in pixels is a ruler each set carries
with it; the ratio of two sets' medians is the factor that gives the external set the training
set's pixel size (``test_data.scale: red_cells``, :mod:`cytocompare.matching`).

Per image (:func:`red_cell_circles`):

1. optical density ``|OD|`` and HSV saturation, both smoothed (sigma 1.5 px);
2. the white cells are the saturated pixels (> 0.4; red cells and the background are pale),
   grown by 3 px;
3. the red-cell mask: ``|OD|`` above the level whose outline has the strongest mean gradient
   (:func:`edge_level`; Otsu's level cuts through the pale red cells of dense bone-marrow crops,
   and the faint haze between them joins them into one network), outside the white cells, holes
   (the central pallor) filled, opened by a 2 px disc;
4. touching and overlapping red cells are split by a watershed of the distance transform;
5. each cell's outline, less the stretches on the image border, next to a white cell or next to
   another red cell, gets a least-squares circle. It counts when the circle fits (RMS residual
   under 8 % of the radius), the outline covers at least half of it (so that the diameter is
   pinned down: a cell cut by the image border still counts), its diameter is 12-60 % of the
   image's shorter side, and the disc is red cell (>= 85 %), not white cell (<= 2 %).

Per data set (:func:`measure_red_cells`): the images in a seeded random order until
:data:`TARGET_CELLS` red cells are found or :data:`MAX_IMAGES` images are looked at; the median,
quartiles and a 95 % interval of the median of their diameters.

Counting cells cut by the border and cells that touch matters on bone marrow: the Matek crops
are 250 px, a red cell is ~85 px, and most red cells touch the border or each other, so the
isolated, whole, round ones (the textbook filter) number about one in a hundred crops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cytocompare.errors import DataError

#: red cells measured per data set: images are taken in a seeded random order until this many
#: are found (the 95 % interval of the median is then about +-1.5 % on bone marrow, where a red
#: cell's diameter varies most) ...
TARGET_CELLS = 300
#: ... or until this many images have been looked at
MAX_IMAGES = 1000
#: fewer red cells than this over the images looked at: no estimate (the median would be a guess)
MIN_CELLS = 30
#: red-cell diameters counted, as fractions of an image's shorter side
DIAMETER_RANGE = (0.12, 0.6)
_SIGMA = 1.5
_WHITE_SATURATION = 0.4
_MAX_RESIDUAL = 0.08
_MIN_COVERAGE = 0.5
_MIN_INSIDE = 0.85
_MAX_WHITE = 0.02


@dataclass(frozen=True)
class Circle:
    """A red cell found in one image: centre (row, column), diameter in px, fit quality."""

    cy: float
    cx: float
    diameter: float
    residual: float  # RMS distance of the outline from the circle, over the radius
    coverage: float  # share of the circle's 36 10-degree sectors the outline passes through


def _disc(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def _smoothed_channels(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage as ndi

    from cytocompare.colour import optical_density

    od = np.linalg.norm(optical_density(rgb), axis=-1)
    c = rgb.astype(np.float64)
    top = c.max(axis=-1)
    sat = np.where(top > 0, (top - c.min(axis=-1)) / np.maximum(top, 1), 0.0)
    return ndi.gaussian_filter(od, _SIGMA), ndi.gaussian_filter(sat, _SIGMA)


def edge_level(od: np.ndarray, exclude: np.ndarray, n_levels: int = 24) -> float | None:
    """The ``od`` level (between its 2nd percentile and 1.1 x Otsu's level, over the pixels not
    in ``exclude``) whose outline has the largest mean gradient magnitude; None for a flat image.

    A pixel lies on the inner outline of ``od > t`` when the least of it and its 4 neighbours is
    ``<= t < od``, so cumulative histograms count those pixels and their gradient for every level
    at once.
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    values = od[~exclude]
    if values.size < 100 or np.ptp(values) < 1e-6:
        return None
    lo, hi = float(np.percentile(values, 2)), float(threshold_otsu(values)) * 1.1
    if hi <= lo:
        return None
    levels = np.linspace(lo, hi, n_levels)[1:]
    grad = ndi.gaussian_gradient_magnitude(od, 1.0)
    low = ndi.minimum_filter(od, footprint=ndi.generate_binary_structure(2, 1))  # the 4-neighbours
    keep = ~exclude
    v, m, g = od[keep], low[keep], grad[keep]

    # per level t: the pixels (and their gradient) with m <= t, minus those with v <= t (v >= m)
    def up_to(values: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        first = np.searchsorted(levels, values, side="left")  # the first level >= the value
        return np.cumsum(np.bincount(first, weights=weights, minlength=len(levels) + 1))[:len(levels)]

    count = up_to(m, None) - up_to(v, None)
    total = up_to(m, g) - up_to(v, g)
    score = np.where(count >= 50, total / np.maximum(count, 1), -np.inf)
    if not np.isfinite(score).any():
        return None
    return float(levels[int(np.argmax(score))])


def _fit_circle(y: np.ndarray, x: np.ndarray) -> tuple[float, float, float]:
    """Least-squares (Kasa) circle through points: centre row, centre column, radius."""
    a = np.column_stack([2 * x, 2 * y, np.ones_like(x)])
    (cx, cy, c), *_ = np.linalg.lstsq(a, x * x + y * y, rcond=None)
    return float(cy), float(cx), float(np.sqrt(max(c + cx * cx + cy * cy, 0.0)))


def red_cell_circles(rgb: np.ndarray, diameter_range: tuple[float, float] = DIAMETER_RANGE) -> list[Circle]:
    """The red cells of one (H, W, 3) uint8 image that pass every test of the module docstring.

    ``diameter_range``: the diameters counted, as fractions of the image's shorter side.
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.measure import find_contours
    from skimage.segmentation import watershed

    h, w = rgb.shape[:2]
    min_d, max_d = (f * min(h, w) for f in diameter_range)
    od, sat = _smoothed_channels(rgb)
    white = sat > _WHITE_SATURATION
    white_grown = ndi.binary_dilation(white, _disc(3))
    level = edge_level(od, white_grown)
    if level is None:
        return []
    red = ndi.binary_opening(ndi.binary_fill_holes((od > level) & ~white_grown), _disc(2))
    if not red.any():
        return []
    # split touching and overlapping cells: one watershed basin per distance-transform peak
    dist = ndi.distance_transform_edt(np.pad(red, 1, mode="edge"))[1:-1, 1:-1]
    components, _ = ndi.label(red)
    peaks = peak_local_max(dist, min_distance=max(3, int(0.4 * min_d)), threshold_abs=min_d / 4,
                           labels=components, exclude_border=False)
    markers = np.zeros(red.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    basins = watershed(-dist, markers, mask=red)
    near_white = ndi.binary_dilation(white_grown, _disc(2))
    found: list[Circle] = []
    for outline in find_contours(np.pad(red, 1).astype(np.float32), 0.5):
        y, x = outline[:, 0] - 1, outline[:, 1] - 1
        yi, xi = np.clip(np.rint(y).astype(int), 0, h - 1), np.clip(np.rint(x).astype(int), 0, w - 1)
        free = (y > 1) & (y < h - 2) & (x > 1) & (x < w - 2) & ~near_white[yi, xi]
        # the basin each outline point belongs to, and whether another basin is within 2 px
        around = np.stack([basins[np.clip(yi + dy, 0, h - 1), np.clip(xi + dx, 0, w - 1)]
                           for dy in (-2, 0, 2) for dx in (-2, 0, 2)])
        basin = around.max(axis=0)
        shared = np.any((around != basin) & (around != 0), axis=0)
        for b in np.unique(basin[basin > 0]):
            sel = free & ~shared & (basin == b)
            if sel.sum() < 20:
                continue
            circle = _circle_of(y[sel], x[sel], min_d, max_d)
            if circle is not None and _is_red_disc(circle, red, white):
                found.append(circle)
    return found


def _circle_of(y: np.ndarray, x: np.ndarray, min_d: float, max_d: float) -> Circle | None:
    cy, cx, r = _fit_circle(y, x)
    if not min_d <= 2 * r <= max_d:
        return None
    residual = float(np.sqrt(np.mean((np.hypot(y - cy, x - cx) - r) ** 2)) / r)
    sectors = np.floor((np.arctan2(y - cy, x - cx) + np.pi) / (2 * np.pi) * 36).astype(int) % 36
    coverage = len(np.unique(sectors)) / 36
    if residual >= _MAX_RESIDUAL or coverage < _MIN_COVERAGE:
        return None
    return Circle(cy, cx, 2 * r, residual, coverage)


def _is_red_disc(c: Circle, red: np.ndarray, white: np.ndarray) -> bool:
    """The circle's disc (0.9 of its radius, the part inside the image) is red cell, not white
    cell: a white cell's pale cytoplasm crescent has a round outline too, around a nucleus."""
    h, w = red.shape
    r = 0.9 * c.diameter / 2
    y0, y1 = max(0, int(c.cy - r)), min(h, int(c.cy + r) + 2)
    x0, x1 = max(0, int(c.cx - r)), min(w, int(c.cx + r) + 2)
    if y1 <= y0 or x1 <= x0:
        return False
    yy, xx = np.ogrid[y0:y1, x0:x1]
    disc = (yy - c.cy) ** 2 + (xx - c.cx) ** 2 <= r * r
    n = disc.sum()
    return bool(n) and red[y0:y1, x0:x1][disc].mean() >= _MIN_INSIDE and white[y0:y1, x0:x1][disc].mean() <= _MAX_WHITE


@dataclass(frozen=True)
class RedCellSize:
    """The red-cell diameters (px) of a sample of a data set's images."""

    median_px: float
    q1_px: float
    q3_px: float
    #: a distribution-free 95 % interval of the median (order statistics n/2 -+ 0.98 sqrt(n))
    median_ci95_px: tuple[float, float]
    n_cells: int
    n_images: int
    n_images_with_cells: int

    def describe(self) -> str:
        return (f"median red-cell diameter {self.median_px:.1f} px (IQR {self.q1_px:.1f}-{self.q3_px:.1f}, "
                f"95 % CI of the median {self.median_ci95_px[0]:.1f}-{self.median_ci95_px[1]:.1f}; "
                f"{self.n_cells} red cells in {self.n_images_with_cells} of {self.n_images} images)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def median_interval(values: np.ndarray) -> tuple[float, float]:
    """95 % confidence interval of the median of ``values`` from order statistics (binomial
    normal approximation, no assumption on the distribution)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = len(v)
    half = 0.98 * np.sqrt(n)
    lo, hi = int(np.floor(n / 2 - half)), int(np.ceil(n / 2 + half))
    return float(v[max(lo, 0)]), float(v[min(hi, n - 1)])


def measure_red_cells(images: Any, *, target_cells: int = TARGET_CELLS, max_images: int = MAX_IMAGES,
                      seed: int = 0, min_cells: int = MIN_CELLS, what: str = "the data set",
                      progress: Callable[[int, int], None] | None = None) -> RedCellSize:
    """Median red-cell diameter of an ImageSet's images, decoded as the set decodes them, taken in
    a seeded random order until ``target_cells`` red cells are found or ``max_images`` images have
    been looked at (a peripheral-blood set with ~7 red cells an image needs ~40 images, a
    bone-marrow set with ~0.25 an image all ``max_images``). Raises :class:`DataError` naming
    ``what`` when fewer than ``min_cells`` red cells are found."""
    n = len(images)
    order = np.random.default_rng(seed).permutation(n)[:max_images]
    diameters: list[float] = []
    looked = with_cells = 0
    for i in order:
        if len(diameters) >= target_cells:
            break
        found = [c.diameter for c in red_cell_circles(images[int(i)])]
        diameters += found
        looked += 1
        with_cells += bool(found)
        if progress is not None:
            progress(looked, len(order))
    if len(diameters) < min_cells:
        raise DataError(
            f"{what}: only {len(diameters)} red cells measured in {looked} images (at least {min_cells} "
            "needed), too few to estimate its pixel scale; give test_data.scale a fixed factor instead")
    d = np.asarray(diameters)
    q1, med, q3 = np.percentile(d, [25, 50, 75])
    return RedCellSize(float(med), float(q1), float(q3), median_interval(d), len(d), looked, with_cells)


def scale_factor(train: RedCellSize, test: RedCellSize) -> float:
    """The factor that gives the test set's red cells the training set's size in pixels
    (rounded to 3 decimals: it is part of the feature-cache key and of the run log)."""
    return round(train.median_px / test.median_px, 3)


def factor_interval(train: RedCellSize, test: RedCellSize) -> tuple[float, float]:
    """A conservative 95 % range of the factor: the ratio of the two medians' intervals' ends."""
    return (round(train.median_ci95_px[0] / test.median_ci95_px[1], 3),
            round(train.median_ci95_px[1] / test.median_ci95_px[0], 3))
