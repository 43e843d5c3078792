"""Handcrafted single-cell features: one module per family, assembled per profile.

``feature_names(profile)`` lists the columns (known without any image);
``compute_features(rgb, profile)`` segments one image and returns the row, the segmentation
and per-family timings; ``write_feature_docs(path)`` writes ``docs/features.md``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from cytocompare_classical.features.base import FILL_VALUE, MASKS, CellContext, FeatureFamily, Profile
from cytocompare_classical.features.channels import CHANNELS, compute_channels
from cytocompare_classical.features.gabor import GaborEnergy
from cytocompare_classical.features.granulometry import Granulometry
from cytocompare_classical.features.haralick import Haralick
from cytocompare_classical.features.intensity import Histogram, IntensityStatistics
from cytocompare_classical.features.lbp import LocalBinaryPatterns
from cytocompare_classical.features.qc import QualityControl
from cytocompare_classical.features.shape import Shape
from cytocompare_classical.features.tas import ThresholdAdjacency
from cytocompare_classical.features.zernike import Zernike
from cytocompare_classical.segmentation import Segmentation, segment_cell

__all__ = [
    "FAMILIES", "FILL_VALUE", "MASKS", "PROFILES", "CHANNELS", "Profile", "FeatureFamily",
    "feature_names", "compute_features", "write_feature_docs",
]

ALL_CHANNELS: tuple[str, ...] = tuple(CHANNELS)

PROFILES: dict[str, Profile] = {
    # >6,000 features: every colour channel for the cheap and the GLCM/LBP families, a stain
    # and colour subset for the costlier ones (Zernike, TAS, Gabor, granulometry)
    "full": Profile(
        name="full",
        intensity_channels=ALL_CHANNELS,
        histogram_channels=ALL_CHANNELS,
        histogram_bins=16,
        haralick_channels=ALL_CHANNELS,
        haralick_distances=(1, 2, 4),
        haralick_levels=32,
        lbp_configs=((1, 8, ALL_CHANNELS), (2, 16, ("grey", "hed_h", "hed_e", "hsv_h", "hsv_s", "lab_a", "lab_b"))),
        zernike_channels=("grey", "hed_h", "hed_e", "hsv_s", "lab_a"),
        zernike_degree=8,
        tas_channels=("grey", "hed_h"),
        gabor_channels=("grey", "hed_h"),
        gabor_frequencies=(0.05, 0.1, 0.2, 0.3),
        gabor_orientations=4,
        granulometry_channels=("grey", "hed_h"),
        granulometry_sizes=(3, 5, 7, 9, 11, 15, 19),
        fourier_descriptors=16,
    ),
    # a few hundred features for CI and conformance runs
    "quick": Profile(
        name="quick",
        intensity_channels=("grey", "hed_h", "hsv_s"),
        histogram_channels=("grey", "hed_h", "hsv_s"),
        histogram_bins=8,
        haralick_channels=("grey",),
        haralick_distances=(1,),
        haralick_levels=16,
        lbp_configs=((1, 8, ("grey",)),),
        zernike_channels=("grey",),
        zernike_degree=4,
        tas_channels=(),
        gabor_channels=("grey",),
        gabor_frequencies=(0.1, 0.25),
        gabor_orientations=2,
        granulometry_channels=("grey",),
        granulometry_sizes=(3, 7, 11),
        fourier_descriptors=4,
    ),
}

#: every family, in column order
FAMILIES: tuple[FeatureFamily, ...] = (
    QualityControl(), Shape(), IntensityStatistics(), Histogram(), Haralick(), LocalBinaryPatterns(),
    Zernike(), ThresholdAdjacency(), GaborEnergy(), Granulometry(),
)

#: margin (pixels) kept around the cell's bounding box: texture filters need context at the edge
_CROP_MARGIN = 8


def get_profile(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown feature profile {profile!r}; choose one of {sorted(PROFILES)}") from None


def feature_names(profile: str | Profile = "full") -> list[str]:
    """Column names in order, from the profile alone."""
    p = get_profile(profile)
    return [n for fam in FAMILIES for n in fam.names(p)]


def _channels_needed(p: Profile) -> tuple[str, ...]:
    used = set(p.intensity_channels + p.histogram_channels + p.haralick_channels + tuple(c for *_, cs in p.lbp_configs for c in cs)
               + p.zernike_channels + p.tas_channels + p.gabor_channels + p.granulometry_channels)
    return tuple(c for c in ALL_CHANNELS if c in used)


def build_context(rgb: np.ndarray, seg: Segmentation, p: Profile) -> CellContext:
    h, w = rgb.shape[:2]
    if seg.ok and seg.cell.any():
        ys, xs = np.nonzero(seg.cell)
        y0, y1 = max(ys.min() - _CROP_MARGIN, 0), min(ys.max() + 1 + _CROP_MARGIN, h)
        x0, x1 = max(xs.min() - _CROP_MARGIN, 0), min(xs.max() + 1 + _CROP_MARGIN, w)
    else:
        y0, y1, x0, x1 = 0, h, 0, w
    crop = rgb[y0:y1, x0:x1]
    masks = {"cell": seg.cell[y0:y1, x0:x1], "nucleus": seg.nucleus[y0:y1, x0:x1], "cytoplasm": seg.cytoplasm[y0:y1, x0:x1]}
    return CellContext(compute_channels(crop, _channels_needed(p)), masks, (h, w), (int(y0), int(x0)), seg.ok)


def compute_features(
    rgb: np.ndarray, profile: str | Profile = "full", *, timings: dict[str, float] | None = None
) -> tuple[np.ndarray, Segmentation]:
    """Segment one (H, W, 3) uint8 image and compute its feature row (float64, finite).

    A failed segmentation gives a row of ``FILL_VALUE`` with ``qc.segmentation_ok = 0``.
    ``timings``, if given, accumulates seconds per family (plus "segmentation", "channels").
    """
    p = get_profile(profile)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    t0 = time.perf_counter()
    seg = segment_cell(rgb)
    t1 = time.perf_counter()
    names_per_family = [fam.names(p) for fam in FAMILIES]
    if not seg.ok:
        row = np.full(sum(map(len, names_per_family)), FILL_VALUE)
        row[0] = 0.0  # qc.segmentation_ok is the first column
        if timings is not None:
            timings["segmentation"] = timings.get("segmentation", 0.0) + (t1 - t0)
        return row, seg
    ctx = build_context(rgb, seg, p)
    t2 = time.perf_counter()
    if timings is not None:
        timings["segmentation"] = timings.get("segmentation", 0.0) + (t1 - t0)
        timings["channels"] = timings.get("channels", 0.0) + (t2 - t1)
    parts = []
    for fam, names in zip(FAMILIES, names_per_family):
        if not names:
            continue
        ts = time.perf_counter()
        v = np.asarray(fam.compute(ctx, p), dtype=np.float64)
        if v.shape != (len(names),):  # a programming error, not a data problem
            raise RuntimeError(f"family {fam.name} returned {v.shape}, expected ({len(names)},)")
        parts.append(v)
        if timings is not None:
            timings[fam.name] = timings.get(fam.name, 0.0) + (time.perf_counter() - ts)
    row = np.concatenate(parts)
    return np.nan_to_num(row, nan=FILL_VALUE, posinf=FILL_VALUE, neginf=FILL_VALUE), seg


def write_feature_docs(path: str | Path) -> Path:
    """Write the Markdown reference of every family, channel, mask and the feature counts."""
    from cytocompare_classical.features.docs import render

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")
    return path
