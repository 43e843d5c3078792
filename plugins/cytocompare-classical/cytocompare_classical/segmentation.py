"""Stain-aware segmentation of the central cell into nucleus and cytoplasm (MGG-stained smears).

In May-Grünwald-Giemsa the nucleus is dark violet: it is the darkest object in the **green**
channel (violet absorbs green strongly) and it is much bluer than green (``B - G`` large), while
erythrocytes are pink/red (``B - G`` small) and the background is bright and grey. The algorithm,
one function per step (``segment_cell`` runs them in order):

1. ``smoothed_green_and_violet`` and ``green_thresholds``: a 3-class multi-Otsu threshold on the
   smoothed green channel (classes ≈ nucleus / cytoplasm+erythrocytes / background).
2. ``nucleus_candidates``: pixels of the lowest class that are violet (``B - G`` above a margin),
   cleaned by opening, hole filling and small-object removal.
3. ``central_component`` and ``merge_lobes``: the candidate nearest the image centre (the dataset
   centres the annotated cell); fragments within ``merge_radius`` of it are merged, so that the
   lobes of a segmented neutrophil form one nucleus.
4. ``cytoplasm_and_cell``: foreground (darker than the background threshold on green and
   bluish) around the nucleus, limited to the pixels nearer to the chosen nucleus than to any
   other nucleus (a Voronoi split, which separates touching neighbour cells), within a maximal
   distance of the nucleus, opened to cut thin bridges, and kept connected to the nucleus.

Every threshold and size is a field of :class:`SegmentationParams` (defaults tuned on the Matek
images), which the ``handcrafted`` extractor takes as its ``segmentation`` parameter.

A failure (blank or uniform image, no violet object) returns ``ok=False`` with a reason and empty
masks; only an array that is not an RGB image raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_multiotsu, threshold_otsu
from skimage.segmentation import watershed

#: reference image side (the Matek data are 250 x 250); sizes below scale with the image.
_REF_SIDE = 250.0

# parallelism comes from images across processes, not from OpenCV threads on one small image
cv2.setNumThreads(1)


@dataclass
class Segmentation:
    """Masks of the central cell and diagnostics.

    Attributes
    ----------
    nucleus, cytoplasm, cell : (H, W) bool arrays; ``cell = nucleus | cytoplasm``.
    ok : False when no plausible nucleus was found (masks are then empty).
    reason : why segmentation failed ("" when ok).
    n_nucleus_fragments : how many connected components were merged into the nucleus.
    centre_distance : pixels from the image centre to the nearest nucleus pixel.
    thresholds : the green-channel thresholds used (nucleus, background).
    """

    nucleus: np.ndarray
    cytoplasm: np.ndarray
    cell: np.ndarray
    ok: bool
    reason: str = ""
    n_nucleus_fragments: int = 0
    centre_distance: float = float("nan")
    thresholds: tuple[float, float] = (float("nan"), float("nan"))
    extra: dict[str, float] = field(default_factory=dict)


def _failed(shape: tuple[int, int], reason: str, thresholds: tuple[float, float] = (np.nan, np.nan)) -> Segmentation:
    empty = np.zeros(shape, dtype=bool)
    return Segmentation(empty, empty.copy(), empty.copy(), ok=False, reason=reason, thresholds=thresholds)


def _disk(radius: int) -> np.ndarray:
    r = max(int(radius), 0)
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r * r


# Binary morphology and distance transforms through OpenCV: the same pixels / distances as
# scipy.ndimage (tests/test_segmentation.py compares them on random masks), 3-25x less CPU.
# Pixels outside the image count as background, as ndimage's ``border_value=0``.


def _cv(op: Any, mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    return op(np.ascontiguousarray(mask, dtype=bool).view(np.uint8), structure.astype(np.uint8),
              borderType=cv2.BORDER_CONSTANT, borderValue=0).view(bool)


def binary_erosion(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """``ndi.binary_erosion(mask, structure)`` (symmetric structure, border 0)."""
    return _cv(cv2.erode, mask, structure)


def binary_opening(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """``ndi.binary_opening(mask, structure)`` for a symmetric structure (a disk)."""
    return _cv(cv2.dilate, _cv(cv2.erode, mask, structure), structure)


def binary_closing(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """``ndi.binary_closing(mask, structure)`` for a symmetric structure (a disk)."""
    return _cv(cv2.erode, _cv(cv2.dilate, mask, structure), structure)


def distance_transform_edt(mask: np.ndarray) -> np.ndarray:
    """``ndi.distance_transform_edt(mask)`` (float64, bit-identical): OpenCV's exact (Felzenszwalb)
    transform gives float32 roots of the integer squared distances, which are recovered exactly
    (< 2^24, far from half-integers) and rooted again in float64, as ndimage does. A mask with
    no background pixel, whose ndimage result is a convention of its own, goes to ndimage."""
    mask = np.ascontiguousarray(mask, dtype=bool)
    if mask.all():
        return ndi.distance_transform_edt(mask)
    d = cv2.distanceTransform(mask.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE).astype(np.float64)
    d *= d
    return np.sqrt(np.rint(d, out=d), out=d)


def _watershed(image: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``skimage.segmentation.watershed(image, markers, mask=mask)`` run on the bounding box of
    ``mask`` only: the same labels. Outside the mask the result is ``markers * mask``, i.e. 0,
    and inside the flooding order (by value, then by time of entry, pixels entering in raster
    order) depends only on the pixels of the mask, whose raster order the crop keeps."""
    out = np.zeros(markers.shape, dtype=np.int32)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size:
        box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        out[box] = watershed(image[box], markers[box], mask=mask[box])
    return out


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes by labelling the background once; much faster than ``binary_fill_holes``,
    which iterates erosions to convergence."""
    lab, n = ndi.label(~mask)
    if n == 0:
        return mask.copy()
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    outside = np.zeros(n + 1, dtype=bool)
    outside[border] = True  # background reaching the border; label 0 (the mask) stays False
    outside[0] = False
    return mask | ~outside[lab]


def _label_min(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Minimum of ``values`` per label 1..n (``ndi.minimum`` sorts the whole image: slower)."""
    m = labels > 0
    out = np.full(n + 1, np.inf)
    np.minimum.at(out, labels[m], values[m])
    return out[1:]


@dataclass(frozen=True)
class SegmentationParams:
    """The thresholds and sizes of :func:`segment_cell`; sizes are in pixels at a 250 px image
    side and scale with the image (the defaults are tuned on the Matek MGG images).

    Reach them from a protocol through the extractor: ``handcrafted`` with
    ``params: {segmentation: {min_violet: 20}}``; :meth:`from_mapping` names a bad key.
    """

    min_contrast: float = field(default=30.0, metadata={"doc": (
        "minimum spread (99th - 1st percentile of the smoothed green channel) for anything to be "
        "segmented; below it the image is treated as blank")})
    smoothing_sigma: float = field(default=1.0, metadata={"doc": (
        "Gaussian sigma (px) applied to green and blue before thresholding (JPEG block noise, granules)")})
    min_violet: float = field(default=25.0, metadata={"doc": (
        "minimum `B - G` (0-255 scale) of a nucleus pixel: nuclei measure ~60-120 on the Matek "
        "images, erythrocytes ~0-20")})
    nucleus_opening_radius: float = field(default=2.0, metadata={"doc": (
        "radius (px) of the opening that cleans the nucleus candidates")})
    min_nucleus_area: float = field(default=150.0, metadata={"doc": (
        "smallest nucleus candidate kept (px at 250 px side; scales with the area)")})
    merge_radius: float = field(default=12.0, metadata={"doc": (
        "nucleus fragments whose gap to the central component is at most this (px) are merged "
        "into it (lobes of segmented neutrophils)")})
    split_min_distance: float = field(default=14.0, metadata={"doc": (
        "touching nucleus candidates are split by a watershed on their distance transform, one "
        "seed per local maximum at least this far (px) apart; a split piece is kept only if it "
        "passes the `lobe_reach` test, so a neighbour's nucleus touching the central one is cut off")})
    lobe_reach: float = field(default=75.0, metadata={"doc": (
        "a nucleus fragment or split piece other than the central one joins the nucleus only if its "
        "centroid lies within this distance (px) of the image centre (the annotated cell is centred; "
        "a touching neighbour's nucleus lies further out)")})
    cytoplasm_violet_range: tuple[float, float] = field(default=(30.0, 60.0), metadata={"doc": (
        "the `B - G` threshold separating bluish/lilac cytoplasm from pink erythrocytes and grey "
        "background (an Otsu split of the non-nucleus pixels) is clipped to this range")})
    max_cytoplasm_width: float = field(default=70.0, metadata={"doc": (
        "the cytoplasm extends at most this far (px) from the nucleus, so that neighbouring "
        "foreground is not absorbed when no edge separates it")})
    cytoplasm_smoothing_radius: float = field(default=4.0, metadata={"doc": (
        "radius (px) of the closing (bridges gaps between granules) and then the opening (cuts "
        "thin bridges to neighbours and ragged spurs) of the cell")})
    nucleus_smoothing_radius: float = field(default=2.0, metadata={"doc": (
        "radius (px) of the closing and then opening that smooth the chosen nucleus's border "
        "(granules at its rim, JPEG noise); holes are filled after it")})

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "cytoplasm_violet_range":
                ok = (isinstance(value, tuple) and len(value) == 2 and all(_is_number(v) for v in value)
                      and value[0] <= value[1])
                if not ok:
                    raise ValueError(f"segmentation parameter cytoplasm_violet_range must be [low, high] with "
                                     f"low <= high, got {value!r}")
            elif not _is_number(value) or value < 0:
                raise ValueError(f"segmentation parameter {f.name} must be a number >= 0, got {value!r}")

    @classmethod
    def from_mapping(cls, values: SegmentationParams | Mapping[str, Any] | None) -> SegmentationParams:
        """Parameters from a protocol's mapping (lists become tuples); the defaults for ``None``.
        An unknown key raises ``ValueError`` naming it and listing the valid ones."""
        if values is None:
            return cls()
        if isinstance(values, SegmentationParams):
            return values
        if not isinstance(values, Mapping):
            raise ValueError(f"segmentation parameters must be a mapping, got {values!r}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"unknown segmentation parameter(s) {', '.join(map(repr, unknown))}; "
                             f"valid: {', '.join(valid)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def describe(self) -> dict[str, tuple[Any, str]]:
        """name → (value, description), for the docs."""
        return {f.name: (getattr(self, f.name), f.metadata["doc"]) for f in fields(self)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


class _Failed(Exception):
    """A step found no plausible cell: ``segment_cell`` returns a failed Segmentation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _scaled(pixels: float, scale: float, minimum: int = 1) -> int:
    """A radius given at 250 px side, rounded for this image."""
    return max(int(round(pixels * scale)), minimum)


def segment_cell(rgb: np.ndarray, params: SegmentationParams | Mapping[str, Any] | None = None) -> Segmentation:
    """Segment the cell at the image centre into nucleus and cytoplasm.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 RGB image.
    params : :class:`SegmentationParams` or a mapping of some of its fields (the rest keep their
        defaults); ``None`` for the defaults.

    Returns
    -------
    Segmentation
        ``ok=False`` with a reason (and empty masks) when no plausible nucleus is found; only a
        non-RGB array raises.
    """
    p = SegmentationParams.from_mapping(params)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    thresholds: tuple[float, float] = (np.nan, np.nan)
    try:
        check_size(h, w)
        scale = min(h, w) / _REF_SIDE
        green, violet = smoothed_green_and_violet(rgb, p.smoothing_sigma)
        thresholds = green_thresholds(green, p.min_contrast)
        t_nuc, t_bg = thresholds
        cand, labels, n, areas, keep = nucleus_candidates(green, violet, t_nuc, p, scale)
        labels, n, areas, keep = split_touching_nuclei(cand, labels, keep, p.split_min_distance * scale)
        centre_d = centre_distance((h, w))
        chosen = central_component(labels, n, areas, keep, centre_d, scale)
        nucleus, merged = merge_lobes(labels, n, keep, chosen, p.merge_radius * scale, p.lobe_reach * scale)
        nucleus = smooth_mask(nucleus, _scaled(p.nucleus_smoothing_radius, scale, minimum=0))
        cyto, cell = cytoplasm_and_cell(green, violet, cand, labels, keep, merged, nucleus, t_bg, p, scale)
    except _Failed as failure:
        return _failed((h, w), failure.reason, thresholds)
    return Segmentation(
        nucleus=nucleus,
        cytoplasm=cyto,
        cell=cell,
        ok=True,
        n_nucleus_fragments=int(merged.sum()),
        centre_distance=float(centre_d[nucleus].min()),
        thresholds=(t_nuc, t_bg),
        extra={"nucleus_area": float(nucleus.sum()), "cytoplasm_area": float(cyto.sum())},
    )


# ------------------------------------------------------------------------------ the steps, in order


def check_size(h: int, w: int) -> None:
    """An image below 16 x 16 cannot hold a nucleus with a cytoplasm rim at any scale."""
    if min(h, w) < 16:
        raise _Failed(f"image too small ({h}x{w}); need at least 16x16")


def smoothed_green_and_violet(rgb: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Step 1: the smoothed green channel (nuclei are darkest there) and ``violet = B - G``
    (large for nuclei and cytoplasm, small for erythrocytes and background), float32."""
    img = rgb.astype(np.float32)
    green = ndi.gaussian_filter(img[..., 1], sigma)
    blue = ndi.gaussian_filter(img[..., 2], sigma)
    return green, blue - green


def green_thresholds(green: np.ndarray, min_contrast: float) -> tuple[float, float]:
    """Step 1: (nucleus, background) thresholds of a 3-class multi-Otsu on green (classes ≈
    nucleus / cytoplasm and erythrocytes / background); fails on a blank or uniform image."""
    lo, hi = np.percentile(green, [1, 99])
    if hi - lo < min_contrast:
        raise _Failed(f"blank or uniform image: no contrast (green spread {hi - lo:.1f} < {min_contrast:g})")
    try:
        t_nuc, t_bg = (float(t) for t in threshold_multiotsu(green, classes=3, nbins=128))
    except ValueError:
        raise _Failed("thresholding failed (too few distinct grey levels)") from None
    return t_nuc, t_bg


def nucleus_candidates(
    green: np.ndarray, violet: np.ndarray, t_nuc: float, p: SegmentationParams, scale: float
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
    """Step 2: dark (green <= t_nuc) and violet pixels, opened and hole-filled, labelled.

    Returns the candidate mask, its labels, their number, their areas and which are large enough
    (``min_nucleus_area``); fails when no violet object, or none large enough, exists.
    """
    min_area = max(int(round(p.min_nucleus_area * scale * scale)), 4)
    cand = (green <= t_nuc) & (violet >= p.min_violet)
    cand = binary_opening(cand, _disk(_scaled(p.nucleus_opening_radius, scale)))
    cand = _fill_holes(cand)
    labels, n = ndi.label(cand)
    if n == 0:
        raise _Failed("no violet nucleus found (no dark object with B - G >= %g)" % p.min_violet)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(float)
    keep = areas >= min_area
    if not keep.any():
        raise _Failed(f"no violet object larger than {min_area} px")
    return cand, labels, n, areas, keep


def _centroids(labels: np.ndarray, n: int) -> np.ndarray:
    """(n, 2) centroids of labels 1..n: ``ndi.center_of_mass(np.ones_like(labels), labels,
    range(1, n + 1))`` with the same sums (ndimage's, bincounts of the row and column
    coordinates in raster order) and the same division, without its per-call overhead."""
    h, w = labels.shape
    flat = labels.ravel()
    count = np.bincount(flat, weights=np.ones(flat.size), minlength=n + 1)[1 : n + 1]
    rows = np.broadcast_to(np.arange(h, dtype=float)[:, None], (h, w)).ravel()
    cols = np.broadcast_to(np.arange(w, dtype=float)[None, :], (h, w)).ravel()
    return np.stack([np.bincount(flat, weights=g, minlength=n + 1)[1 : n + 1] / count for g in (rows, cols)], 1)


@lru_cache(maxsize=8)
def centre_distance(shape: tuple[int, int]) -> np.ndarray:
    """Distance of every pixel to the image centre (computed once per image size; read-only)."""
    d = _centre_distance(shape)
    d.flags.writeable = False
    return d


def _centre_distance(shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    return np.hypot(yy - (h - 1) / 2.0, xx - (w - 1) / 2.0)


def central_component(
    labels: np.ndarray, n: int, areas: np.ndarray, keep: np.ndarray, centre_d: np.ndarray, scale: float
) -> int:
    """Step 3: the label of the kept component nearest the image centre (the dataset centres the
    annotated cell); among components about as near (4 px bins at 250 px) the largest wins."""
    dmin = np.where(keep, _label_min(centre_d, labels, n), np.inf)
    order = np.lexsort((-areas, np.round(dmin / max(4.0 * scale, 1.0))))
    return int(order[0]) + 1


def split_touching_nuclei(
    cand: np.ndarray, labels: np.ndarray, keep: np.ndarray, min_distance: float
) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """Step 2b: split touching nuclei (a neighbour's nucleus pressed against the central one) by a
    watershed on the distance transform of the kept candidates, one seed per local maximum at
    least ``min_distance`` px apart. A single nucleus may be over-split (a kidney-shaped monocyte
    nucleus, the lobes of a neutrophil): ``merge_lobes`` joins its pieces again, but not a piece
    whose centroid lies far from the image centre. Returns new (labels, n, areas, keep); the
    dropped small candidates stay out (``keep`` False) as before."""
    kept = labels_of(labels, keep)
    dist = distance_transform_edt(kept)
    peaks = peak_local_max(dist, min_distance=max(int(round(min_distance)), 1), labels=ndi.label(kept)[0],
                           exclude_border=False)
    markers = np.zeros(labels.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    split = _watershed(-dist, markers, kept)
    # every kept component holds at least one peak (its distance maximum), so none is lost
    small = cand & ~kept
    n_split = int(split.max())
    small_labels, n_small = ndi.label(small)
    out = np.where(small_labels > 0, small_labels + n_split, split).astype(np.int32)
    n = n_split + n_small
    areas = np.bincount(out.ravel(), minlength=n + 1)[1:].astype(float)
    return out, n, areas, np.arange(1, n + 1) <= n_split


def merge_lobes(
    labels: np.ndarray, n: int, keep: np.ndarray, chosen: int, radius: float, reach: float = np.inf
) -> tuple[np.ndarray, np.ndarray]:
    """Step 3: the nucleus = the chosen component and, repeatedly, every kept fragment within
    ``radius`` px of the nucleus so far (the lobes of a segmented neutrophil, the pieces of an
    over-split nucleus, joined in a chain) whose centroid lies within ``reach`` px of the image
    centre (not a neighbour's nucleus touching it). Returns the mask and which labels were merged."""
    h, w = labels.shape
    index = np.arange(1, n + 1)
    centroids = _centroids(labels, n)
    off_centre = np.hypot(centroids[:, 0] - (h - 1) / 2.0, centroids[:, 1] - (w - 1) / 2.0)
    candidates = keep & (off_centre <= reach)
    merged = np.zeros(n, dtype=bool)
    merged[chosen - 1] = True
    while True:
        gap = distance_transform_edt(~labels_of(labels, merged))
        grown = merged | (candidates & (_label_min(gap, labels, n) <= radius))
        if np.array_equal(grown, merged):
            break
        merged = grown
    return labels_of(labels, merged), merged


def smooth_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Closing then opening by a disk of ``radius`` and hole filling: a smooth border without
    the single-pixel spurs and notches of a threshold. The opening never removes the whole
    mask: if it would, the closed mask is kept."""
    if radius <= 0:
        return _fill_holes(mask)
    disk = _disk(radius)
    closed = binary_closing(np.pad(mask, radius), disk)[radius:-radius, radius:-radius]
    opened = binary_opening(closed, disk)
    return _fill_holes(opened if opened.any() else closed | mask)


def cytoplasm_and_cell(
    green: np.ndarray, violet: np.ndarray, cand: np.ndarray, labels: np.ndarray, keep: np.ndarray,
    merged: np.ndarray, nucleus: np.ndarray, t_bg: float, p: SegmentationParams, scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: the cytoplasm and the cell (``cell = nucleus | cytoplasm``, holes filled).

    Foreground = darker than the background threshold and bluish/lilac: white-cell cytoplasm in
    MGG is blue to lilac (B - G ~ 60-100 on the Matek images), erythrocytes and background are
    pinkish-grey (B - G ~ 10-35); an Otsu split of B - G over the non-nucleus pixels separates
    them, clipped to ``cytoplasm_violet_range`` so that an image without erythrocytes is not
    over-split. It is limited to the pixels nearer the chosen nucleus than any other nucleus (a
    Voronoi split separating touching neighbours) and to ``max_cytoplasm_width``, smoothed, and
    kept only where connected to the nucleus.
    """
    rest = violet[~cand]
    lo, hi = p.cytoplasm_violet_range
    t_cv = float(np.clip(threshold_otsu(rest) if rest.size and np.ptp(rest) > 0 else 40.0, lo, hi))
    other_nuclei = labels_of(labels, keep & ~merged) & ~nucleus
    fg = ((green < t_bg) & (violet > t_cv)) | nucleus | other_nuclei
    # seeded watershed on the foreground's distance transform: each nucleus grows through its
    # own cell and touching cells meet at the narrowest neck between them, which follows the
    # real border better than a straight Voronoi line between nuclei
    markers = np.zeros(labels.shape, dtype=np.int32)
    other_labels, _ = ndi.label(other_nuclei)
    markers[other_labels > 0] = other_labels[other_labels > 0] + 1
    markers[nucleus] = 1
    own = _watershed(-distance_transform_edt(fg), markers, fg) == 1
    d_own = distance_transform_edt(~nucleus)
    cyto = own & (d_own <= p.max_cytoplasm_width * scale) & ~other_nuclei
    cell = smooth_mask(cyto | nucleus, _scaled(p.cytoplasm_smoothing_radius, scale)) & ~other_nuclei
    lab_cell, _ = ndi.label(cell | nucleus)
    keep_labels = np.unique(lab_cell[nucleus])
    chosen = np.zeros(int(lab_cell.max()) + 1, dtype=bool)
    chosen[keep_labels] = True
    chosen[0] = False
    cell = _fill_holes(chosen[lab_cell]) | nucleus
    return cell & ~nucleus, cell


def labels_of(labels: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Mask of the labels 1..n where ``which`` (one entry per label) is True (a look-up
    table: the pixels of ``np.isin(labels, chosen labels)``, with less CPU)."""
    table = np.zeros(which.size + 1, dtype=bool)
    table[1:] = which
    return table[labels]


def overlay(rgb: np.ndarray, seg: Segmentation) -> np.ndarray:
    """``rgb`` with the nucleus contour in yellow and the cell (cytoplasm) contour in green."""
    out = np.array(rgb, dtype=np.uint8, copy=True)
    for mask, colour in ((seg.cell, (0, 220, 0)), (seg.nucleus, (255, 230, 0))):
        edge = mask & ~ndi.binary_erosion(mask, iterations=1, border_value=0)
        out[ndi.binary_dilation(edge)] = colour
    h, w = out.shape[:2]
    out[h // 2 - 1 : h // 2 + 2, w // 2 - 1 : w // 2 + 2] = (255, 0, 0)  # image centre
    return out


def save_masks(rgb: np.ndarray, seg: Segmentation, path: str | Path) -> Path:
    """Write an inspection PNG: the original beside an overlay of the nucleus/cell contours.

    A failed segmentation gets a red band at the top of the overlay.
    """
    from PIL import Image

    ov = overlay(rgb, seg)
    if not seg.ok:
        ov[: max(2, ov.shape[0] // 25)] = (255, 0, 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([np.asarray(rgb, dtype=np.uint8), ov], axis=1)).save(path)
    return path
