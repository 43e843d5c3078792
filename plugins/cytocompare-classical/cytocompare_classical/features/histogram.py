"""Normalised histograms per (mask, channel) on the fixed [0, 1] channel range."""

from __future__ import annotations

import numpy as np

from cytocompare_classical.features.base import (
    ALL_CHANNELS, FILL_VALUE, MASKS, CellContext, FeatureFamily, Setting, check_channels, check_grey_levels,
)
from cytocompare_classical.features.registry import register_family


@register_family
class Histogram(FeatureFamily):
    """Normalised histogram of a channel inside a mask: fraction of pixels per equal-width bin
    on the fixed [0, 1] range (so bins mean the same colour in every image)."""

    name = "hist"
    column_order = 40
    settings_spec = {
        "channels": Setting(ALL_CHANNELS, "channels histogrammed", check=check_channels,
                            quick=("grey", "hed_h", "hsv_s")),
        "bins": Setting(16, "equal-width bins on [0, 1] (the `hist<bins>` part of the names)",
                        check=check_grey_levels, quick=8),
    }
    feature_docs = {"binNN": "fraction of mask pixels whose value falls in bin NN of equal-width bins on [0, 1]"}

    def names(self) -> list[str]:
        b = self.settings.bins
        return [f"{m}.{c}.hist{b}.bin{k:02d}" for m in MASKS for c in self.settings.channels for k in range(b)]

    def compute(self, ctx: CellContext) -> np.ndarray:
        b = self.settings.bins
        chans = self.settings.channels
        out = np.full((len(MASKS), len(chans), b), FILL_VALUE)
        for i, m in enumerate(MASKS):
            mask = ctx.masks[m]
            n = int(mask.sum())
            if n == 0:
                continue
            q = np.stack([ctx.quantised(c, b)[mask] for c in chans]).astype(np.int64)
            q += b * np.arange(len(chans))[:, None]
            out[i] = np.bincount(q.ravel(), minlength=b * len(chans)).reshape(len(chans), b) / n
        return out.ravel()
