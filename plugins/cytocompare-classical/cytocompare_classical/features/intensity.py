"""First-order intensity statistics per (mask, channel)."""

from __future__ import annotations

import numpy as np

from cytocompare_classical.features.base import (
    ALL_CHANNELS, FILL_VALUE, MASKS, CellContext, FeatureFamily, Setting, check_channels,
)
from cytocompare_classical.features.registry import register_family

_PCTS = (1, 5, 10, 25, 50, 75, 90, 95, 99)


@register_family
class IntensityStatistics(FeatureFamily):
    """First-order statistics of a channel's values inside a mask (IBSI/pyradiomics "firstorder").

    Values are the fixed-range [0, 1] channel values, binned to 256 fixed-width levels (bin
    centres; the channels come from 8-bit RGB); entropy and energy use 32 bins on [0, 1]. An empty mask gives the fill value; zero variance gives skewness/kurtosis 0.
    """

    name = "intensity"
    column_order = 30
    settings_spec = {
        "channels": Setting(ALL_CHANNELS, "channels whose in-mask values are summarised", check=check_channels,
                            quick=("grey", "hed_h", "hsv_s")),
    }
    feature_docs = {
        "mean": "mean value",
        "sd": "standard deviation",
        "skewness": "third standardised moment (0 if sd = 0)",
        "kurtosis": "excess kurtosis, fourth standardised moment - 3 (0 if sd = 0)",
        "min": "minimum",
        "max": "maximum",
        "range": "max - min",
        **{f"p{p:02d}": f"{p}th percentile" for p in _PCTS},
        "iqr": "interquartile range p75 - p25",
        "mad": "mean absolute deviation from the mean",
        "rmad": "robust mean absolute deviation (values between p10 and p90, from their mean)",
        "cv": "coefficient of variation sd / mean (0 if mean = 0)",
        "entropy": "Shannon entropy (bits) of the 32-bin histogram",
        "energy": "sum of squared 32-bin histogram probabilities (uniformity)",
        "rms": "root mean square",
    }

    def names(self) -> list[str]:
        return [f"{m}.{c}.intensity.{f}" for m in MASKS for c in self.settings.channels for f in self.feature_docs]

    def compute(self, ctx: CellContext) -> np.ndarray:
        per = len(self.feature_docs)
        chans = self.settings.channels
        out = np.full((len(MASKS), len(chans), per), FILL_VALUE, dtype=np.float64)
        # every statistic comes from a 256-level histogram per channel (the channels derive from
        # 8-bit RGB, so 256 fixed-width levels lose almost nothing): one bincount per mask
        q = np.stack([ctx.quantised(c, 256) for c in chans]).astype(np.int64)
        q += 256 * np.arange(len(chans))[:, None, None]
        for i, m in enumerate(MASKS):
            mask = ctx.masks[m]
            n = int(mask.sum())
            if n == 0:
                continue
            hist = np.bincount(q[:, mask].ravel(), minlength=256 * len(chans)).reshape(len(chans), 256) / n
            out[i] = _stats_from_hist(hist)
        return out.ravel()


_LEVELS = (np.arange(256) + 0.5) / 256.0  # bin centres on [0, 1]


def _stats_from_hist(hist: np.ndarray) -> np.ndarray:
    """The statistics of ``feature_docs`` from (C, 256) normalised histograms."""
    x = _LEVELS
    mean = hist @ x
    d = x[None, :] - mean[:, None]
    d2 = d * d
    var = (hist * d2).sum(1)
    sd = np.sqrt(var)
    ok = sd > 1e-9
    safe = np.where(ok, sd, 1.0)
    skew = np.where(ok, (hist * d2 * d).sum(1) / safe**3, 0.0)
    kurt = np.where(ok, (hist * d2 * d2).sum(1) / safe**4 - 3.0, 0.0)
    cdf = np.cumsum(hist, axis=1)
    nz = hist > 0
    vmin = x[np.argmax(nz, axis=1)]
    vmax = x[255 - np.argmax(nz[:, ::-1], axis=1)]
    # percentile = first level whose cumulative fraction reaches p
    pct = np.stack([x[np.minimum((cdf < p / 100.0 - 1e-12).sum(1), 255)] for p in _PCTS])
    p10, p25, p75, p90 = pct[2], pct[3], pct[5], pct[6]
    inside = (x[None] >= p10[:, None]) & (x[None] <= p90[:, None])
    w_in = hist * inside
    cnt = np.maximum(w_in.sum(1), 1e-12)
    rmean = (w_in @ x) / cnt
    rmad = (w_in * np.abs(x[None] - rmean[:, None])).sum(1) / cnt
    h32 = hist.reshape(hist.shape[0], 32, 8).sum(2)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(h32 > 0, h32 * np.log2(np.where(h32 > 0, h32, 1)), 0.0).sum(1)
    cv = np.where(np.abs(mean) > 1e-9, sd / np.where(np.abs(mean) > 1e-9, mean, 1.0), 0.0)
    cols = [mean, sd, skew, kurt, vmin, vmax, vmax - vmin, *pct, p75 - p25,
            (hist * np.abs(d)).sum(1), rmad, cv, ent, (h32**2).sum(1), np.sqrt(hist @ (x * x))]
    return np.stack(cols, axis=1)
