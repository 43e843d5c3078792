"""Shape of each mask, nucleus-cytoplasm relations and contour Fourier descriptors."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import find_contours
from skimage.morphology import convex_hull_image
from skimage.util import unique_rows

from cytocompare_classical.features.base import (
    FILL_VALUE, MASKS, CellContext, FeatureFamily, Setting, check_positive_int,
)
from cytocompare_classical.features.registry import register_family
from cytocompare_classical.segmentation import _fill_holes, binary_erosion


#: 4-connectivity (ndimage's default structure, skimage's ``perimeter(neighborhood=4)``)
_CROSS4 = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)

_PER_MASK: dict[str, str] = {
    "area": "pixels in the mask",
    "perimeter": "perimeter (skimage.measure.perimeter, 4-connectivity)",
    "equivalent_diameter": "diameter of the disc of the same area",
    "circularity": "4 pi area / perimeter^2 (1 for a disc)",
    "convex_area": "pixels in the convex hull",
    "solidity": "area / convex area",
    "convexity_defect_fraction": "(convex area - area) / convex area",
    "n_convexity_defects": "connected components of (convex hull - mask) larger than 1% of the area",
    "extent": "area / bounding-box area",
    "major_axis": "major axis length of the inertia ellipse (4 sqrt(largest eigenvalue))",
    "minor_axis": "minor axis length of the inertia ellipse",
    "elongation": "minor / major axis",
    "eccentricity": "eccentricity of the inertia ellipse",
    "feret_max": "maximal Feret (caliper) diameter over 36 directions",
    "feret_min": "minimal Feret diameter over 36 directions",
    "feret_ratio": "feret_min / feret_max",
    "n_components": "connected components (lobes for a segmented nucleus)",
    "euler_number": "components minus holes",
    "radial_mean": "mean centroid-to-contour distance / equivalent radius",
    "radial_sd": "sd of centroid-to-contour distance / equivalent radius",
    "radial_min": "min centroid-to-contour distance / equivalent radius",
    "radial_max": "max centroid-to-contour distance / equivalent radius",
    "fdK": "Fourier descriptor K: |FFT| of the centroid distance signal at frequency K / its DC term",
}

_CROSS: dict[str, str] = {
    "nucleus_cell_area_ratio": "nucleus area / cell area",
    "nucleus_cytoplasm_area_ratio": "nucleus area / cytoplasm area (0 if no cytoplasm)",
    "centroid_offset": "distance between nucleus and cell centroids / cell equivalent radius",
    "nucleus_centre_distance": "distance of the nucleus centroid to the image centre / image side",
    "cell_touches_border": "fraction of the cell's contour pixels on the image border",
}


@register_family
class Shape(FeatureFamily):
    """Morphometry of the cell, nucleus and cytoplasm masks (no intensities).

    Sizes are in pixels of the 250 x 250 image (all Matek images share one magnification).
    Lobularity of segmented nuclei shows in ``n_components``, ``solidity`` and
    ``n_convexity_defects``; contour irregularity in the Fourier descriptors of the
    centroid-distance signal of the largest component's outer contour (resampled to 64 points).
    """

    name = "shape"
    column_order = 20
    settings_spec = {
        "fourier_descriptors": Setting(16, "contour Fourier descriptors per mask (fd01 ...)",
                                       check=check_positive_int, quick=4),
    }
    feature_docs = {**_PER_MASK, **{f"relation.{k}": v for k, v in _CROSS.items()}}

    def _per_mask(self) -> list[str]:
        base = [k for k in _PER_MASK if k != "fdK"]
        return base + [f"fd{k:02d}" for k in range(1, self.settings.fourier_descriptors + 1)]

    def names(self) -> list[str]:
        return [f"{m}.shape.{f}" for m in MASKS for f in self._per_mask()] + [f"relation.shape.{k}" for k in _CROSS]

    def compute(self, ctx: CellContext) -> np.ndarray:
        per = self._per_mask()
        out = []
        for m in MASKS:
            mask = ctx.masks[m]
            if mask.sum() < 3:
                out.append(np.full(len(per), FILL_VALUE))
            else:
                out.append(_mask_shape(mask, self.settings.fourier_descriptors))
        out.append(self._cross(ctx))
        return np.nan_to_num(np.concatenate(out), nan=FILL_VALUE, posinf=FILL_VALUE, neginf=FILL_VALUE)

    def _cross(self, ctx: CellContext) -> np.ndarray:
        cell, nuc, cyto = ctx.masks["cell"], ctx.masks["nucleus"], ctx.masks["cytoplasm"]
        a_cell, a_nuc, a_cyto = cell.sum(), nuc.sum(), cyto.sum()
        if a_cell == 0 or a_nuc == 0:
            return np.full(len(_CROSS), FILL_VALUE)
        cn = np.array(ndi.center_of_mass(nuc))
        cc = np.array(ndi.center_of_mass(cell))
        r_eq = np.sqrt(a_cell / np.pi)
        h, w = ctx.image_shape
        centre = np.array([(h - 1) / 2 - ctx.offset[0], (w - 1) / 2 - ctx.offset[1]])
        # the crop touches the image border where its offset is 0 or it ends at the image edge
        edge = cell & ~binary_erosion(cell, _CROSS4)
        on_border = np.zeros_like(cell)
        if ctx.offset[0] == 0:
            on_border[0] = True
        if ctx.offset[1] == 0:
            on_border[:, 0] = True
        if ctx.offset[0] + cell.shape[0] >= h:
            on_border[-1] = True
        if ctx.offset[1] + cell.shape[1] >= w:
            on_border[:, -1] = True
        return np.array([
            a_nuc / a_cell,
            a_nuc / a_cyto if a_cyto > 0 else FILL_VALUE,
            np.hypot(*(cn - cc)) / r_eq,
            np.hypot(*(cn - centre)) / max(h, w),
            (edge & on_border).sum() / max(edge.sum(), 1),
        ])


def _mask_shape(mask: np.ndarray, n_fd: int) -> np.ndarray:
    # every measure below is translation invariant or counts pixels: the mask's bounding box
    # plus a 1-pixel frame (so borders, holes and contours are as in the whole crop) suffices,
    # and the convex hull's point-in-polygon test, the costliest step, covers far fewer pixels
    ys, xs = np.nonzero(mask)
    y0, x0 = max(ys.min() - 1, 0), max(xs.min() - 1, 0)
    mask = mask[y0 : ys.max() + 2, x0 : xs.max() + 2]
    area = float(mask.sum())
    eroded = binary_erosion(mask, _CROSS4)
    per = _perimeter4(mask, eroded)
    eqd = np.sqrt(4 * area / np.pi)
    hull = _convex_hull_image(mask)
    carea = float(hull.sum())
    defects, nd = ndi.label(hull & ~mask)
    dsizes = np.bincount(defects.ravel())[1:] if nd else np.zeros(0)
    ys, xs = ys - y0, xs - x0
    bbox = (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
    cov = np.cov(np.stack([ys, xs]).astype(np.float64)) if area > 1 else np.zeros((2, 2))
    ev = np.sort(np.maximum(np.linalg.eigvalsh(cov), 0))[::-1]
    major, minor = 4 * np.sqrt(ev[0]), 4 * np.sqrt(ev[1])
    ecc = np.sqrt(1 - ev[1] / ev[0]) if ev[0] > 0 else 0.0
    ang = np.deg2rad(np.arange(0, 180, 5))
    # a pixel with its 4 neighbours in the mask is never the extreme of a projection: the
    # contour pixels give the same Feret widths
    ey, ex = np.nonzero(mask & ~eroded)
    proj = np.outer(ey, np.sin(ang)) + np.outer(ex, np.cos(ang))
    widths = proj.max(0) - proj.min(0) + 1
    lab, ncomp = ndi.label(mask, structure=np.ones((3, 3)))
    holes, nholes = ndi.label(_fill_holes(mask) & ~mask)
    radial, fd = _contour_signal(mask, lab, n_fd)
    r_eq = eqd / 2
    return np.array([
        area, per, eqd,
        4 * np.pi * area / per**2 if per > 0 else FILL_VALUE,
        carea, area / carea, (carea - area) / carea,
        float((dsizes > 0.01 * area).sum()),
        area / bbox,
        major, minor, minor / major if major > 0 else FILL_VALUE, ecc,
        widths.max(), widths.min(), widths.min() / widths.max(),
        float(ncomp), float(ncomp - nholes),
        radial.mean() / r_eq, radial.std() / r_eq, radial.min() / r_eq, radial.max() / r_eq,
        *fd,
    ])


#: skimage.measure.perimeter's weights of the 3 x 3 border-pixel codes (4-neighbourhood)
_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1
_PERIMETER_WEIGHTS[[21, 33]] = np.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + np.sqrt(2)) / 2
_PERIMETER_KERNEL = ((10, 2, 10), (2, 1, 2), (10, 2, 10))


def _perimeter4(mask: np.ndarray, eroded: np.ndarray) -> float:
    """``skimage.measure.perimeter(mask, neighborhood=4)``, the same value to the last bit (the
    same integer codes, histogram and dot product), from the mask's 4-erosion computed once."""
    border = (mask & ~eroded).astype(np.uint8)
    h, w = border.shape
    padded = np.pad(border, 1)
    code = np.zeros((h, w), dtype=np.uint8)
    for dy, row in enumerate(_PERIMETER_KERNEL):
        for dx, k in enumerate(row):
            code += np.uint8(k) * padded[dy : dy + h, dx : dx + w]
    return float(np.bincount(code.ravel(), minlength=50) @ _PERIMETER_WEIGHTS)


_DIAMOND = np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, -0.5], [0.0, 0.5]])


def _convex_hull_image(mask: np.ndarray) -> np.ndarray:
    """``skimage.morphology.convex_hull_image(mask)``, the same pixels.

    The same hull polygon (skimage's own steps: the end pixels of every row and column, the
    midpoints of their edges, duplicates dropped by ``unique_rows``, which also sorts them, then
    qhull), then, instead of skimage's point-in-polygon test of every pixel against every edge,
    each row's run of pixels from the polygon's two crossings of that row. Both are exact: the
    vertices are half-integers, so skimage's test (inside, edge or vertex counts as in) decides
    without rounding, and here a crossing ``C0 + (C1 - C0) (2y - R0) / (R1 - R0)`` (coordinates
    doubled) is an integer computed exactly or a fraction further than 1/1000 from any integer.
    """
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    ends = np.concatenate([  # skimage's possible_hull: the first and last pixel of each row and column
        np.stack([rows, mask[rows].argmax(1)], 1), np.stack([rows, w - 1 - mask[rows, ::-1].argmax(1)], 1),
        np.stack([mask[:, cols].argmax(0), cols], 1), np.stack([h - 1 - mask[::-1, cols].argmax(0), cols], 1),
    ])
    coords = unique_rows((ends[:, None, :] + _DIAMOND).reshape(-1, 2))
    try:
        hull = ConvexHull(coords)
    except QhullError:  # degenerate: skimage's own handling (a warning and an empty hull)
        return convex_hull_image(mask)
    v = 2 * hull.points[hull.vertices]  # doubled: integers, in order around the polygon
    r0, c0 = v[:, 0], v[:, 1]
    r1, c1 = np.roll(r0, -1), np.roll(c0, -1)
    rows = 2.0 * np.arange(h)[:, None]  # (h, 1) doubled row coordinates
    lo_r, hi_r = np.minimum(r0, r1), np.maximum(r0, r1)
    spans = (rows >= lo_r) & (rows <= hi_r) & (r0 != r1)  # (h, edges): the edge crosses the row
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = c0 + (c1 - c0) * (rows - r0) / (r1 - r0)
    left = np.where(spans, cross, np.inf).min(1)
    right = np.where(spans, cross, -np.inf).max(1)
    x = np.arange(w)[None]
    return (2 * x >= left[:, None]) & (2 * x <= right[:, None])


def _contour_signal(mask: np.ndarray, lab: np.ndarray, n_fd: int) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    largest = lab == int(sizes.argmax())
    c = _longest_contour(largest)
    if c is None:
        return np.zeros(1), np.zeros(n_fd)
    c = c - 1
    cy, cx = np.nonzero(largest)
    d = np.hypot(c[:, 0] - cy.mean(), c[:, 1] - cx.mean())
    # resample by arc length to 64 points so descriptors do not depend on contour pixel count
    seg = np.hypot(*np.diff(c, axis=0).T)
    s = np.concatenate([[0], np.cumsum(seg)])
    if s[-1] <= 0:
        return d, np.zeros(n_fd)
    sig = np.interp(np.linspace(0, s[-1], 64, endpoint=False), s, d)
    spec = np.abs(np.fft.rfft(sig))
    fd = spec[1 : n_fd + 1] / spec[0] if spec[0] > 0 else np.zeros(n_fd)
    return d, np.pad(fd, (0, max(0, n_fd - fd.size)))


def _longest_contour(mask: np.ndarray) -> np.ndarray | None:
    """``max(find_contours(np.pad(mask, 1).astype(float), 0.5), key=len)`` (the first of the
    longest contours of a binary mask), the same array, in numpy; ``None`` if there is none.

    skimage's marching squares emit segments square by square in raster order (a saddle square
    two, the pixels touching at a corner kept apart, ``fully_connected='low'``), and it
    assembles them in Python with a dict per point (~1.5 ms per mask). On a zero-padded binary
    image every contour closes, and skimage's result is known in advance: each contour is a
    cycle of segments, contours listed in the order of their first segment, each starting at
    the end point of its last segment (the one that closes it) and repeating that point at the
    end. Here the segments come from the same table, the cycles from pointer jumping, and only
    the longest is walked. ``tests/test_features.py`` compares it with find_contours.
    """
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    H, W = m.shape
    case = (m[:-1, :-1].astype(np.uint8) + 2 * m[:-1, 1:] + 4 * m[1:, :-1] + 8 * m[1:, 1:]).ravel()
    sq = np.flatnonzero((case != 0) & (case != 15))
    if sq.size == 0:
        return None
    cs = case[sq]
    # doubled coordinates of a square's edge midpoints: top, bottom, left, right
    r2, c2 = 2 * (sq // (W - 1)), 2 * (sq % (W - 1))
    pts = np.stack([np.stack([r2, c2 + 1], 1), np.stack([r2 + 2, c2 + 1], 1),
                    np.stack([r2 + 1, c2], 1), np.stack([r2 + 1, c2 + 2], 1)], 1)  # (n, 4, 2)
    first_seg, second_seg, has_second = _SQUARE_SEGMENTS
    seg = np.stack([first_seg[cs], second_seg[cs]], 1)  # (n, 2 segments, from/to edge)
    two = has_second[cs]
    order = np.stack([np.ones_like(two), two], 1).ravel()  # generation order: square, then 1st / 2nd
    sq_rep = np.repeat(np.arange(sq.size), 2)[order]
    seg = seg.reshape(-1, 2)[order]
    frm, to = pts[sq_rep, seg[:, 0]], pts[sq_rep, seg[:, 1]]  # (S, 2) doubled coordinates
    code_from = frm[:, 0] * (2 * W) + frm[:, 1]
    code_to = to[:, 0] * (2 * W) + to[:, 1]
    lookup = np.full(2 * H * 2 * W, -1, dtype=np.intp)
    lookup[code_from] = np.arange(code_from.size)
    nxt = lookup[code_to]
    if (nxt < 0).any() or np.unique(code_from).size != code_from.size:  # pragma: no cover - not closed
        return _skimage_longest(np.pad(mask, 1).astype(np.float64))
    # per segment, the first and last segment index of its cycle, by pointer jumping
    lo = hi = np.arange(nxt.size)
    jump = nxt
    for _ in range(int(np.ceil(np.log2(max(nxt.size, 2)))) + 1):
        lo, hi = np.minimum(lo, lo[jump]), np.maximum(hi, hi[jump])
        jump = jump[jump]
    length = np.bincount(lo, minlength=nxt.size)
    first = int(np.flatnonzero(length == length.max())[0])  # the first of the longest (lo = first index)
    start = int(nxt[hi[first]])  # the contour begins where its closing segment ends
    walk, nxt_list = [start], nxt.tolist()
    for _ in range(int(length[first]) - 1):
        walk.append(nxt_list[walk[-1]])
    walk.append(start)
    return frm[walk] / 2.0


#: per marching-squares case: the (from, to) edges (0 top, 1 bottom, 2 left, 3 right) of its first
#: and second segment, and whether it has a second (saddles 6 and 9); skimage's table
def _segment_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    T, B, Lf, R = 0, 1, 2, 3
    first = {1: (T, Lf), 2: (R, T), 3: (R, Lf), 4: (Lf, B), 5: (T, B), 6: (R, T), 7: (R, B), 8: (B, R),
             9: (T, Lf), 10: (B, T), 11: (B, Lf), 12: (Lf, R), 13: (T, R), 14: (Lf, T)}
    second = {6: (Lf, B), 9: (B, R)}
    a = np.zeros((16, 2), dtype=np.intp)
    b = np.zeros((16, 2), dtype=np.intp)
    for k, v in first.items():
        a[k] = v
    for k, v in second.items():
        b[k] = v
    return a, b, np.isin(np.arange(16), list(second))


_SQUARE_SEGMENTS = _segment_table()


def _skimage_longest(image: np.ndarray) -> np.ndarray | None:
    contours = find_contours(image, 0.5)
    return max(contours, key=len) if contours else None
