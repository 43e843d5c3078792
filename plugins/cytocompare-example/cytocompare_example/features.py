"""Colour and intensity statistics: a small, fast feature extractor."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.base import TransformerMixin

from cytocompare import BaseComponent, ImageSet
from cytocompare.protocols import Tags

_PERCENTILES = (10, 25, 50, 75, 90)
_CHANNELS = ("r", "g", "b", "h", "s", "v")


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """Vectorised RGB (0..1) to HSV (0..1); avoids a scikit-image dependency."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    c = v - rgb.min(axis=-1)
    s = np.where(v > 0, c / np.maximum(v, 1e-12), 0.0)
    safe_c = np.maximum(c, 1e-12)
    h = np.select(
        [c == 0, v == r, v == g],
        [0.0, ((g - b) / safe_c) % 6, (b - r) / safe_c + 2],
        default=(r - g) / safe_c + 4,
    )
    return np.stack([h / 6.0, s, v], axis=-1)


class ColourStatistics(TransformerMixin, BaseComponent):
    """Per-channel statistics of the whole image and of its darkest pixels.

    A scikit-learn transformer (``TransformerMixin`` gives ``fit_transform``) from images to a
    float32 feature matrix.

    In May-Grünwald-Giemsa stains the nucleus is the darkest, most violet structure, so the
    darkest ``dark_fraction`` of pixels (by the green channel) is a crude nucleus proxy.

    Parameters
    ----------
    dark_fraction : float, default=0.2
        Fraction of pixels, by lowest green value, treated as "dark" (nuclear) pixels.
    hue_bins : int, default=8
        Bins of the hue histogram of the dark pixels.
    """

    tags: ClassVar[Tags] = Tags(deterministic=True)

    def __init__(self, dark_fraction: float = 0.2, hue_bins: int = 8) -> None:
        self.dark_fraction = dark_fraction
        self.hue_bins = hue_bins

    def fit(self, images: ImageSet, y: np.ndarray | None = None) -> ColourStatistics:
        """Stateless: records the feature names only."""
        self.feature_names_ = self.get_feature_names_out()
        return self

    def get_feature_names_out(self) -> list[str]:
        names = []
        for region in ("image", "dark"):
            for ch in _CHANNELS:
                names += [f"{region}.{ch}.mean", f"{region}.{ch}.sd"]
                names += [f"{region}.{ch}.p{p}" for p in _PERCENTILES]
        names += [f"dark.h.hist{i:02d}" for i in range(self.hue_bins)]
        names += ["dark.area_fraction_below_otsu_like"]
        return names

    def transform(self, images: ImageSet) -> np.ndarray:
        out = np.empty((len(images), len(self.get_feature_names_out())), dtype=np.float32)
        for i in range(len(images)):
            out[i] = self._one(images[i])
        return out

    def _one(self, rgb_u8: np.ndarray) -> np.ndarray:
        rgb = rgb_u8.reshape(-1, 3).astype(np.float64) / 255.0
        pixels = np.concatenate([rgb, _rgb_to_hsv(rgb)], axis=1)
        n_dark = max(1, int(len(pixels) * self.dark_fraction))
        dark = pixels[np.argsort(pixels[:, 1], kind="stable")[:n_dark]]
        feats: list[float] = []
        for region in (pixels, dark):
            # one percentile call per region (all channels at once) instead of one per channel
            mean, sd = region.mean(axis=0), region.std(axis=0)
            pct = np.percentile(region, _PERCENTILES, axis=0)
            for c in range(len(_CHANNELS)):
                feats += [mean[c], sd[c]]
                feats += list(pct[:, c])
        hist, _ = np.histogram(dark[:, 3], bins=self.hue_bins, range=(0.0, 1.0))
        feats += list(hist / max(1, hist.sum()))
        # how much of the image is clearly darker than the mid-point of dark and overall green
        threshold = 0.5 * (dark[:, 1].mean() + pixels[:, 1].mean())
        feats.append(float((pixels[:, 1] < threshold).mean()))
        return np.asarray(feats, dtype=np.float32)
