"""Stain-aware segmentation of the central cell into nucleus and cytoplasm (MGG-stained smears).

In May-Grünwald-Giemsa the nucleus is dark violet: it is the darkest object in the **green**
channel (violet absorbs green strongly) and it is much bluer than green (``B - G`` large), while
erythrocytes are pink/red (``B - G`` small) and the background is bright and grey. The algorithm:

1. Nucleus candidates: the lowest class of a 3-class multi-Otsu threshold on the smoothed green
   channel (classes ≈ nucleus / cytoplasm+erythrocytes / background), kept only where the pixel
   is violet (``B - G`` above a margin), cleaned by opening, hole filling and small-object removal.
2. The central nucleus: the candidate component nearest the image centre (the dataset centres
   the annotated cell); fragments within ``merge_radius`` of it are merged, so that the lobes of
   a segmented neutrophil form one nucleus.
3. Cytoplasm: foreground (darker than a second Otsu threshold on green, or clearly coloured)
   around the nucleus, limited to the pixels nearer to the chosen nucleus than to any other
   nucleus (a Voronoi split, which separates touching neighbour cells), within a maximal
   distance of the nucleus, opened to cut thin bridges, and kept connected to the nucleus.

A failure (blank or uniform image, no violet object) returns ``ok=False`` with a reason and empty
masks; it never raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu, threshold_otsu

#: reference image side (the Matek data are 250 x 250); sizes below scale with the image.
_REF_SIDE = 250.0


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


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes by labelling the background once; much faster than ``binary_fill_holes``,
    which iterates erosions to convergence."""
    lab, n = ndi.label(~mask)
    if n == 0:
        return mask.copy()
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    return mask | ~np.isin(lab, border[border > 0])


def _label_min(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Minimum of ``values`` per label 1..n (``ndi.minimum`` sorts the whole image: slower)."""
    m = labels > 0
    out = np.full(n + 1, np.inf)
    np.minimum.at(out, labels[m], values[m])
    return out[1:]


def segment_cell(
    rgb: np.ndarray,
    *,
    min_violet: float = 25.0,
    min_contrast: float = 30.0,
    merge_radius: float = 12.0,
    max_cytoplasm_width: float = 70.0,
) -> Segmentation:
    """Segment the cell at the image centre into nucleus and cytoplasm.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 RGB image.
    min_violet : minimum ``B - G`` (0-255 scale) of a nucleus pixel. Nuclei measure ~60-120 on
        the Matek images, erythrocytes ~0-20, so 25 rejects erythrocytes with margin.
    min_contrast : minimum spread (99th - 1st percentile of green) for anything to be segmented;
        below it the image is treated as blank.
    merge_radius : nucleus fragments whose gap to the central component is at most this many
        pixels (at 250 px image side) are merged into it (lobes of segmented neutrophils).
    max_cytoplasm_width : the cytoplasm extends at most this many pixels (at 250 px) from the
        nucleus; it stops neighbouring foreground from being absorbed when no edge separates it.

    Returns
    -------
    Segmentation
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    if min(h, w) < 16:
        # too small to hold a cell with a nucleus and a cytoplasm rim at any sensible scale
        return _failed((h, w), f"image too small ({h}x{w}); need at least 16x16")
    scale = min(h, w) / _REF_SIDE
    img = rgb.astype(np.float32)
    # sigma 1 smoothing removes JPEG block noise and granules before thresholding
    green = ndi.gaussian_filter(img[..., 1], 1.0)
    blue = ndi.gaussian_filter(img[..., 2], 1.0)
    violet = blue - green

    lo, hi = np.percentile(green, [1, 99])
    if hi - lo < min_contrast:
        return _failed((h, w), f"no contrast (green spread {hi - lo:.1f} < {min_contrast})")
    try:
        t_nuc, t_bg = (float(t) for t in threshold_multiotsu(green, classes=3, nbins=128))
    except ValueError:
        return _failed((h, w), "thresholding failed (too few distinct grey levels)")

    min_area = max(int(round(150 * scale * scale)), 4)
    open_r = max(int(round(2 * scale)), 1)
    cand = (green <= t_nuc) & (violet >= min_violet)
    cand = ndi.binary_opening(cand, structure=_disk(open_r))
    cand = _fill_holes(cand)
    labels, n = ndi.label(cand)
    if n == 0:
        return _failed((h, w), "no violet nucleus found (no dark object with B - G >= %g)" % min_violet, (t_nuc, t_bg))
    idx = np.arange(1, n + 1)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(float)
    keep = areas >= min_area
    if not keep.any():
        return _failed((h, w), f"no violet object larger than {min_area} px", (t_nuc, t_bg))

    yy, xx = np.mgrid[0:h, 0:w]
    centre_d = np.hypot(yy - (h - 1) / 2.0, xx - (w - 1) / 2.0)
    dmin = _label_min(centre_d, labels, n)
    dmin = np.where(keep, dmin, np.inf)
    # nearest component to the centre; among components touching it (distance ~0) the largest wins
    order = np.lexsort((-areas, np.round(dmin / max(4.0 * scale, 1.0))))
    chosen = int(idx[order[0]])
    nucleus = labels == chosen

    # merge lobes: other large-enough fragments within merge_radius of the chosen component
    gap = ndi.distance_transform_edt(~nucleus)
    gaps = _label_min(gap, labels, n)
    merged = keep & (gaps <= merge_radius * scale)
    merged[chosen - 1] = True
    nucleus = np.isin(labels, idx[merged])
    n_frag = int(merged.sum())

    # cytoplasm: foreground = not background AND bluish/lilac. White-cell cytoplasm in MGG is
    # blue to lilac (B - G ~ 60-100 on the Matek images), erythrocytes and the background are
    # pinkish-grey (B - G ~ 10-35); an Otsu split of B - G over the non-nucleus pixels separates
    # them, clipped to a plausible range so that an image without erythrocytes is not over-split.
    rest = violet[~cand]
    t_cv = float(np.clip(threshold_otsu(rest) if rest.size and np.ptp(rest) > 0 else 40.0, 30.0, 60.0))
    fg = (green < t_bg) & (violet > t_cv)
    other_nuclei = np.isin(labels, idx[keep & ~merged])
    # Voronoi split between the chosen nucleus and the other nuclei (neighbour cells)
    d_own = ndi.distance_transform_edt(~nucleus)
    if other_nuclei.any():
        d_other = ndi.distance_transform_edt(~other_nuclei)
        territory = d_own < d_other
    else:
        territory = np.ones_like(nucleus)
    cyto = fg & territory & (d_own <= max_cytoplasm_width * scale) & ~nucleus & ~other_nuclei
    # closing bridges the gaps between granules of pale cytoplasm; opening then cuts thin
    # bridges to neighbouring objects
    cyto = ndi.binary_closing(cyto, structure=_disk(max(int(round(3 * scale)), 1)))
    cyto = ndi.binary_opening(cyto, structure=_disk(max(int(round(3 * scale)), 1)))
    cell = _fill_holes(cyto | nucleus)
    lab_cell, _ = ndi.label(cell)
    keep_labels = np.unique(lab_cell[nucleus])
    cell = np.isin(lab_cell, keep_labels[keep_labels > 0])
    cell = _fill_holes(cell)
    cyto = cell & ~nucleus

    return Segmentation(
        nucleus=nucleus,
        cytoplasm=cyto,
        cell=cell,
        ok=True,
        n_nucleus_fragments=n_frag,
        centre_distance=float(centre_d[nucleus].min()),
        thresholds=(t_nuc, t_bg),
        extra={"nucleus_area": float(nucleus.sum()), "cytoplasm_area": float(cyto.sum())},
    )


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
