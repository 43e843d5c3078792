"""Handcrafted single-cell features: one module per family, assembled per profile.

Every family lives in its own module here and registers itself with ``@register_family``; a
:class:`FeatureSet` is every registered family, in column order, configured with one profile's
settings (and any overrides). ``feature_names(profile)`` lists the columns (known without any
image); ``compute_features(rgb, profile)`` segments one image and returns the row and the
segmentation; ``write_feature_docs(path)`` writes ``docs/features.md``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from cytocompare_classical.features.base import (
    ALL_CHANNELS, FILL_VALUE, KNOWN_CHANNELS, MASKS, OPT_IN_CHANNELS, PROFILE_NAMES, CellContext, FeatureFamily,
    Setting, Settings,
)
from cytocompare_classical.features.channels import CHANNELS, compute_channels
from cytocompare_classical.features.stain import STAIN_CHANNELS, background_rgb, stain_channels
from cytocompare_classical.features.registry import family_classes, register_family
from cytocompare_classical.segmentation import Segmentation, SegmentationParams, segment_cell

__all__ = [
    "ALL_CHANNELS", "CHANNELS", "FILL_VALUE", "KNOWN_CHANNELS", "MASKS", "OPT_IN_CHANNELS", "PROFILE_NAMES",
    "STAIN_CHANNELS", "FeatureFamily", "FeatureSet", "Setting", "Settings", "compute_features", "family_classes",
    "feature_names", "feature_set", "register_family", "write_feature_docs",
]

#: margin (pixels) kept around the cell's bounding box: texture filters need context at the edge
_CROP_MARGIN = 8


@dataclass(frozen=True)
class FeatureSet:
    """The configured families of one profile, in column order: what a feature row holds."""

    profile: str
    families: tuple[FeatureFamily, ...]

    def names(self) -> list[str]:
        return [n for fam in self.families for n in fam.names()]

    def channels_needed(self) -> tuple[str, ...]:
        """The union of the families' channels, in ``CHANNELS`` then ``STAIN_CHANNELS`` order
        (each computed once)."""
        used = {c for fam in self.families for c in fam.channels_needed()}
        return tuple(c for c in KNOWN_CHANNELS if c in used)

    def family(self, name: str) -> FeatureFamily:
        for fam in self.families:
            if fam.name == name:
                return fam
        raise KeyError(name)


def _check_unique(names: list[str], what: str) -> None:
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dup = next(n for n in names if n in seen or seen.add(n))  # type: ignore[func-returns-value]
        raise ValueError(f"{what} gives the feature name {dup!r} twice (two settings name the same columns)")


@lru_cache(maxsize=None)
def _profile_set(profile: str, classes: tuple[type[FeatureFamily], ...]) -> FeatureSet:
    # keyed on the registered classes too: a family registered later gives a new set, not a stale one
    fs = FeatureSet(profile, tuple(cls(profile=profile) for cls in classes))
    _check_unique(fs.names(), f"profile {profile!r}")
    return fs


def feature_set(
    profile: str | FeatureSet = "full", settings: Mapping[str, Mapping[str, Any]] | None = None
) -> FeatureSet:
    """The families of ``profile`` ("full" or "quick"), with ``settings`` overriding per family
    (``{"haralick": {"distances": [1, 2]}}``); a bad family, setting or value raises
    ``ValueError`` naming it."""
    if isinstance(profile, FeatureSet):
        if settings:
            raise ValueError("give settings with a profile name, not with a FeatureSet")
        return profile
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown feature profile {profile!r}; choose one of {sorted(PROFILE_NAMES)}")
    if not settings:
        return _profile_set(profile, family_classes())
    if not isinstance(settings, Mapping):
        raise ValueError(f"feature settings must map family names to settings, got {settings!r}")
    classes = {cls.name: cls for cls in family_classes()}
    unknown = sorted(set(settings) - set(classes))
    if unknown:
        raise ValueError(f"unknown feature famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
                         f"families are: {', '.join(classes)}")
    for name, values in settings.items():
        if values is not None and not isinstance(values, Mapping):
            raise ValueError(f"settings of feature family {name!r} must be a mapping, got {values!r}")
    fs = FeatureSet(profile, tuple(cls(settings.get(cls.name), profile=profile) for cls in classes.values()))
    _check_unique(fs.names(), f"profile {profile!r} with settings {dict(settings)!r}")
    return fs


def feature_names(profile: str | FeatureSet = "full") -> list[str]:
    """Column names in order, from the profile alone."""
    return feature_set(profile).names()


def build_context(rgb: np.ndarray, seg: Segmentation, fs: FeatureSet) -> CellContext:
    h, w = rgb.shape[:2]
    if seg.ok and seg.cell.any():
        ys, xs = np.nonzero(seg.cell)
        y0, y1 = max(ys.min() - _CROP_MARGIN, 0), min(ys.max() + 1 + _CROP_MARGIN, h)
        x0, x1 = max(xs.min() - _CROP_MARGIN, 0), min(xs.max() + 1 + _CROP_MARGIN, w)
    else:
        y0, y1, x0, x1 = 0, h, 0, w
    crop = rgb[y0:y1, x0:x1]
    masks = {"cell": seg.cell[y0:y1, x0:x1], "nucleus": seg.nucleus[y0:y1, x0:x1], "cytoplasm": seg.cytoplasm[y0:y1, x0:x1]}
    wanted = fs.channels_needed()
    channels = compute_channels(crop, [c for c in wanted if c in CHANNELS])
    stains = [c for c in wanted if c in STAIN_CHANNELS]
    if stains:  # opt-in; the background colour comes from the whole image, not the crop
        channels.update(stain_channels(crop, stains, background_rgb(rgb, seg.cell)))
    return CellContext(channels, masks, (h, w), (int(y0), int(x0)), seg.ok)


def compute_features(
    rgb: np.ndarray,
    profile: str | FeatureSet = "full",
    *,
    segmentation: SegmentationParams | Mapping[str, Any] | None = None,
    timings: dict[str, float] | None = None,
) -> tuple[np.ndarray, Segmentation]:
    """Segment one (H, W, 3) uint8 image and compute its feature row (float64, finite).

    ``profile`` is a profile name or a :func:`feature_set`; ``segmentation`` the parameters of
    :func:`~cytocompare_classical.segmentation.segment_cell` (defaults when ``None``).
    A failed segmentation gives a row of ``FILL_VALUE`` with ``qc.segmentation_ok = 0``.
    ``timings``, if given, accumulates seconds per family (plus "segmentation", "channels").
    """
    fs = feature_set(profile)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    t0 = time.perf_counter()
    seg = segment_cell(rgb, segmentation)
    t1 = time.perf_counter()
    names_per_family = [fam.names() for fam in fs.families]
    if not seg.ok:
        row = np.full(sum(map(len, names_per_family)), FILL_VALUE)
        row[0] = 0.0  # qc.segmentation_ok is the first column
        if timings is not None:
            timings["segmentation"] = timings.get("segmentation", 0.0) + (t1 - t0)
        return row, seg
    ctx = build_context(rgb, seg, fs)
    t2 = time.perf_counter()
    if timings is not None:
        timings["segmentation"] = timings.get("segmentation", 0.0) + (t1 - t0)
        timings["channels"] = timings.get("channels", 0.0) + (t2 - t1)
    parts = []
    for fam, names in zip(fs.families, names_per_family):
        if not names:
            continue
        ts = time.perf_counter()
        v = np.asarray(fam.compute(ctx), dtype=np.float64)
        if v.shape != (len(names),):  # a programming error, not a data problem
            raise RuntimeError(f"family {fam.name} returned {v.shape}, expected ({len(names)},)")
        parts.append(v)
        if timings is not None:
            timings[fam.name] = timings.get(fam.name, 0.0) + (time.perf_counter() - ts)
    row = np.concatenate(parts)
    return np.nan_to_num(row, nan=FILL_VALUE, posinf=FILL_VALUE, neginf=FILL_VALUE), seg


def write_feature_docs(path: str | Path) -> Path:
    """Write the Markdown reference of every family, channel, mask, setting and the counts."""
    from cytocompare_classical.features.docs import render

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")
    return path
