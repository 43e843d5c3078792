"""The shared pieces of every feature family: the per-cell context, profiles, the base class.

Naming scheme (stable, unique, readable): ``<mask>.<channel>.<family>[_<param>].<feature>`` for
intensity/texture families, e.g. ``nucleus.hsv_h.haralick_d2.contrast_mean``, and
``<mask>.shape.<feature>`` for shape, e.g. ``cell.shape.solidity``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

#: masks, in column order
MASKS: tuple[str, ...] = ("cell", "nucleus", "cytoplasm")

#: value written for any feature that is undefined (empty mask, zero variance, failed
#: segmentation): features are always finite so downstream selectors and SVMs never see NaN
FILL_VALUE: float = 0.0


@dataclass(frozen=True)
class Profile:
    """Which channels and parameters each family uses; ``full`` gives >6,000 features."""

    name: str
    intensity_channels: tuple[str, ...]
    histogram_channels: tuple[str, ...]
    histogram_bins: int
    haralick_channels: tuple[str, ...]
    haralick_distances: tuple[int, ...]
    haralick_levels: int
    lbp_configs: tuple[tuple[int, int, tuple[str, ...]], ...]  # (radius, points, channels)
    zernike_channels: tuple[str, ...]  # plus the binary mask itself
    zernike_degree: int
    tas_channels: tuple[str, ...]
    gabor_channels: tuple[str, ...]
    gabor_frequencies: tuple[float, ...]
    gabor_orientations: int
    granulometry_channels: tuple[str, ...]
    granulometry_sizes: tuple[int, ...]
    fourier_descriptors: int


@dataclass
class CellContext:
    """Everything the families need for one cell, computed once and shared.

    ``channels`` are float32 images scaled to [0, 1] with a *fixed* range per channel (not per
    image), so that colour differences between cells survive; ``masks`` are boolean; all arrays
    are cropped to the cell's bounding box plus a margin (texture needs a little context).
    """

    channels: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    image_shape: tuple[int, int]
    offset: tuple[int, int]
    ok: bool
    _quantised: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)

    def quantised(self, channel: str, levels: int) -> np.ndarray:
        """``channel`` quantised to ``levels`` grey levels (uint8), computed once per cell."""
        key = (channel, levels)
        if key not in self._quantised:
            x = self.channels[channel]
            self._quantised[key] = np.minimum((x * levels).astype(np.int32), levels - 1).astype(np.uint8)
        return self._quantised[key]


class FeatureFamily:
    """One family of features (pyradiomics-style): names known from the profile alone.

    Subclasses set ``name`` (used in feature names and docs), a class docstring (what and why),
    ``feature_docs`` (feature suffix → one-line description) and implement ``names`` and
    ``compute``; ``compute`` returns exactly ``len(names(profile))`` values in the same order.
    """

    name: ClassVar[str] = ""
    feature_docs: ClassVar[dict[str, str]] = {}

    def names(self, profile: Profile) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(self, ctx: CellContext, profile: Profile) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self, profile: Profile) -> dict[str, object]:
        """Summary for the docs: docstring, per-feature descriptions and the count."""
        return {
            "name": self.name,
            "doc": (type(self).__doc__ or "").strip(),
            "features": dict(self.feature_docs),
            "count": len(self.names(profile)),
        }
