"""Rotation-invariant uniform local binary patterns (Ojala et al. 2002), vectorised over channels."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from cytocompare_classical.features.base import (
    ALL_CHANNELS, FILL_VALUE, MASKS, CellContext, FeatureFamily, Setting, check_channels, check_positive_int,
)
from cytocompare_classical.features.registry import register_family


def _check_configs(value: Any) -> str | None:
    if not isinstance(value, tuple) or not value:
        return f"must be a non-empty list of [radius, points, [channels]], got {value!r}"
    for config in value:
        if not (isinstance(config, tuple) and len(config) == 3):
            return f"must list [radius, points, [channels]] triples, got {config!r}"
        radius, points, chans = config
        problem = check_positive_int(radius) or check_positive_int(points) or check_channels(chans)
        if not problem and not chans:
            problem = "lists no channel"
        if problem:
            return f"entry {list(config)!r}: {problem}"
    if len({(r, p) for r, p, _ in value}) != len(value):
        return f"repeats a (radius, points) pair: {value!r}"
    return None


@register_family
class LocalBinaryPatterns(FeatureFamily):
    """Histogram of rotation-invariant uniform LBP codes ("riu2", skimage ``method='uniform'``).

    For radius R and P neighbours on a circle (bilinear interpolation), a pixel's code is the
    number of neighbours >= the centre when the circular bit pattern has at most 2 transitions
    (codes 0..P), else P + 1: P + 2 bins, normalised over the mask. Computed in numpy for all
    channels at once (skimage's per-channel Cython loop is ~4x slower here); mahotas' LBP is not
    used because its code space explodes at high P (699k bins at P = 24).
    """

    name = "lbp"
    column_order = 60
    settings_spec = {
        "configs": Setting(
            ((1, 8, ALL_CHANNELS), (2, 16, ("grey", "hed_h", "hed_e", "hsv_h", "hsv_s", "lab_a", "lab_b"))),
            "(radius R, points P, channels) triples (the `lbp_r<R>p<P>` part of the names)",
            check=_check_configs, quick=((1, 8, ("grey",)),),
        ),
    }
    feature_docs = {"binNN": "fraction of mask pixels with uniform LBP code NN (NN = P+1: non-uniform patterns)"}

    def channels_needed(self) -> tuple[str, ...]:
        return tuple(c for *_, chans in self.settings.configs for c in chans)

    def names(self) -> list[str]:
        return [
            f"{m}.{c}.lbp_r{r}p{p}.bin{k:02d}"
            for m in MASKS for r, p, chans in self.settings.configs for c in chans for k in range(p + 2)
        ]

    def compute(self, ctx: CellContext) -> np.ndarray:
        configs = self.settings.configs
        codes = [uniform_lbp(np.stack([ctx.channels[c] for c in chans]), r, p) for r, p, chans in configs]
        within = _within_cell(ctx)
        per_mask: dict[str, list[np.ndarray]] = {m: [] for m in MASKS}
        for (_r, p, chans), code in zip(configs, codes):
            # one bincount for all channels of this configuration: channel k's codes shifted by k (P + 2)
            dt = np.uint8 if (p + 2) * len(chans) <= 256 else np.int64
            keys = code.astype(dt, copy=False) + ((p + 2) * np.arange(len(chans))).astype(dt)[:, None, None]
            cell_keys = keys[:, ctx.masks["cell"]] if within is not None else None
            for m in MASKS:
                mask = ctx.masks[m]
                n = int(mask.sum())
                if n == 0:
                    per_mask[m].append(np.full(len(chans) * (p + 2), FILL_VALUE))
                    continue
                # the nucleus and cytoplasm pixels picked out of the cell's, in the same raster
                # order (counts are integers: any order gives the same bins)
                k = keys[:, mask] if within is None else cell_keys if m == "cell" else cell_keys[:, within[m]]
                per_mask[m].append(np.bincount(k.ravel(), minlength=len(chans) * (p + 2)) / n)
        return np.concatenate([b for m in MASKS for b in per_mask[m]])


def _within_cell(ctx: CellContext) -> dict[str, np.ndarray] | None:
    """Where the nucleus and cytoplasm pixels lie among the cell's (boolean over the cell's
    pixels), or ``None`` when a mask is not inside the cell (then each mask is gathered alone)."""
    cell = ctx.masks["cell"]
    if any((ctx.masks[m] & ~cell).any() for m in MASKS):
        return None
    return {m: ctx.masks[m][cell] for m in MASKS}


#: up to this many points a pixel's bit pattern indexes a table of its riu2 codes
_TABLE_POINTS = 16


@lru_cache(maxsize=4)
def _riu2_table(points: int) -> np.ndarray:
    """The riu2 code of every P-bit circular pattern: its number of set bits if it has at most 2
    0/1 transitions around the circle, else P + 1."""
    patterns = np.arange(1 << points, dtype=np.int64)
    bits = (patterns[:, None] >> np.arange(points)) & 1
    transitions = (bits != np.roll(bits, 1, axis=1)).sum(1)
    # uint8 (codes are at most P + 1 <= 17 here): a 64 KiB table at P = 16 stays in cache
    return np.where(transitions <= 2, bits.sum(1), points + 1).astype(np.uint8)


def uniform_lbp(stack: np.ndarray, radius: int, points: int) -> np.ndarray:
    """riu2 LBP codes of each image in a (C, H, W) stack; borders use edge replication."""
    c, h, w = stack.shape
    pad = radius + 1
    padded = np.pad(stack.astype(np.float32, copy=False), ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    table = points <= _TABLE_POINTS
    # bit k of a pixel's pattern is neighbour k >= centre; with few points the pattern is one
    # integer, its code a table look-up (no per-bit counts over the whole stack)
    pattern = np.zeros((c, h, w), dtype=np.uint8 if points <= 8 else np.uint16) if table else None
    bits = None if table else np.empty((points, c, h, w), dtype=bool)
    # tolerance: interpolation rounding must not flip "equal" neighbours in flat regions
    # (computed once: the same float32 values as ``stack - 1e-6`` per neighbour)
    low = stack - 1e-6
    val = np.empty((c, h, w), dtype=np.float32)
    term = np.empty((c, h, w), dtype=np.float32)
    for k in range(points):
        ang = 2 * np.pi * k / points
        y, x = -radius * np.sin(ang), radius * np.cos(ang)
        # snap near-integer offsets so axis-aligned neighbours are exact (no interpolation blur)
        y = round(y) if abs(y - round(y)) < 1e-6 else y
        x = round(x) if abs(x - round(x)) < 1e-6 else x
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        fy, fx = y - y0, x - x0

        def sl(dy: int, dx: int) -> np.ndarray:
            return padded[:, pad + dy : pad + dy + h, pad + dx : pad + dx + w]

        if fx == 0 and fy == 0:
            bit = sl(y0, x0) >= stack
        else:
            # the same float32 products and sums as ``val = a w0; val += w1 b; ...``, in buffers
            np.multiply(sl(y0, x0), np.float32((1 - fy) * (1 - fx)), out=val)
            for wgt, dy, dx in (((1 - fy) * fx, 0, 1), (fy * (1 - fx), 1, 0), (fy * fx, 1, 1)):
                if wgt > 0:
                    np.multiply(np.float32(wgt), sl(y0 + dy, x0 + dx), out=term)
                    val += term
            bit = val >= low
        if table:
            pattern |= bit.astype(pattern.dtype) << k
        else:
            bits[k] = bit
    if table:
        return _riu2_table(points)[pattern]
    ones = bits.sum(0)
    transitions = (bits != np.roll(bits, 1, axis=0)).sum(0)
    return np.where(transitions <= 2, ones, points + 1).astype(np.uint8 if points < 255 else np.int64)
