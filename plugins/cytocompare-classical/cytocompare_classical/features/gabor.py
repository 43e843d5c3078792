"""Gabor filter-bank energies computed by FFT with a cached frequency-domain kernel bank."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import fft as sfft

from cytocompare_classical.features.base import (
    FILL_VALUE, MASKS, CellContext, FeatureFamily, Setting, check_channels, check_positive_int, check_positive_numbers,
)
from cytocompare_classical.features.registry import register_family


@register_family
class GaborEnergy(FeatureFamily):
    """Mean and standard deviation of the Gabor magnitude response inside the mask.

    Complex Gabor kernels (Gaussian envelope sigma = 0.56 / frequency, i.e. about one octave of
    bandwidth, as skimage's default) at ``frequencies`` (cycles/pixel) x ``orientations``
    angles in [0, pi). Filtering is one FFT of the channel and one
    inverse FFT per kernel; the kernel bank's FFTs are cached per padded size (sizes are
    rounded up to a multiple of 32, so a handful of banks serve every image) — ~50x faster than
    skimage.filters.gabor's spatial convolution.
    """

    name = "gabor"
    column_order = 90
    settings_spec = {
        "channels": Setting(("grey", "hed_h"), "channels filtered", check=check_channels, quick=("grey",)),
        "frequencies": Setting((0.05, 0.1, 0.2, 0.3), "kernel frequencies in cycles/pixel (below 0.5)",
                               check=check_positive_numbers, quick=(0.1, 0.25)),
        "orientations": Setting(4, "kernel angles, evenly spaced in [0, pi)", check=check_positive_int, quick=2),
    }
    feature_docs = {
        "fF_oO_mean": "mean |response| inside the mask at frequency F (cycles/px x 100), orientation O (degrees)",
        "fF_oO_sd": "standard deviation of |response| inside the mask",
    }

    def _bank(self) -> list[tuple[float, float]]:
        n = self.settings.orientations
        return [(f, k * 180.0 / n) for f in self.settings.frequencies for k in range(n)]

    def names(self) -> list[str]:
        return [
            f"{m}.{c}.gabor.f{round(f * 100):02d}_o{round(o):03d}_{s}"
            for m in MASKS for c in self.settings.channels for f, o in self._bank() for s in ("mean", "sd")
        ]

    def compute(self, ctx: CellContext) -> np.ndarray:
        bank = self._bank()
        chans = self.settings.channels
        x = np.stack([ctx.channels[c] for c in chans]).astype(np.float32)
        h, w = x.shape[1:]
        ph, pw = _pad_size(h), _pad_size(w)
        x = x - x.mean(axis=(1, 2), keepdims=True)  # DC removal: energies measure texture, not brightness
        spec = sfft.fft2(x, s=(ph, pw), workers=1)  # (C, ph, pw)
        kernels = _kernel_bank(ph, pw, tuple(bank))  # (K, ph, pw)
        resp = np.abs(_ifft2_cropped(spec[:, None] * kernels[None], h, w))  # (C, K, h, w)
        out = np.full((len(MASKS), len(chans), len(bank), 2), FILL_VALUE)
        cell = ctx.masks["cell"]
        inside = all(not (ctx.masks[m] & ~cell).any() for m in MASKS)
        in_cell = resp[:, :, cell] if inside else None
        for i, m in enumerate(MASKS):
            mask = ctx.masks[m]
            if not mask.any():
                continue
            # the nucleus and cytoplasm values picked out of the cell's: the same values in the
            # same (raster) order as resp[:, :, mask], from a smaller array
            v = resp[:, :, mask] if in_cell is None else in_cell if m == "cell" else in_cell[..., mask[cell]]
            out[i, ..., 0] = v.mean(-1)
            out[i, ..., 1] = v.std(-1)
        return out.ravel()


def _ifft2_cropped(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """``scipy.fft.ifft2(x)[..., :h, :w]`` bit for bit, with less work: pocketfft transforms the
    rows axis first, scaling by 1 / (ph pw) there, then the columns axis; done here as two 1-D
    passes with that same scaling in between, the second pass only over the ``h`` rows kept
    (``tests/test_features.py`` checks the equality)."""
    ph, pw = x.shape[-2:]
    t = sfft.ifft(x, axis=-2, norm="forward", workers=1, overwrite_x=True)[..., :h, :]
    t *= np.float32(1.0 / (ph * pw)) if t.dtype == np.complex64 else 1.0 / (ph * pw)
    return sfft.ifft(t, axis=-1, norm="forward", workers=1, overwrite_x=True)[..., :w]


def _pad_size(n: int) -> int:
    # room for the kernel support (circular convolution wraps) and a multiple of 32 for caching
    return int(np.ceil((n + 24) / 32.0) * 32)


@lru_cache(maxsize=32)
def _kernel_bank(ph: int, pw: int, bank: tuple[tuple[float, float], ...]) -> np.ndarray:
    out = np.empty((len(bank), ph, pw), dtype=np.complex64)
    for k, (freq, deg) in enumerate(bank):
        sigma = 0.56 / freq
        half = int(np.ceil(3 * sigma))
        half = min(half, ph // 2 - 1, pw // 2 - 1)
        y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
        th = np.deg2rad(deg)
        xr = x * np.cos(th) + y * np.sin(th)
        g = np.exp(-(x * x + y * y) / (2 * sigma * sigma)) * np.exp(2j * np.pi * freq * xr)
        g -= g.mean() * (np.abs(g) > 0)  # zero-mean: no response to flat regions
        g /= np.abs(g).sum()
        full = np.zeros((ph, pw), dtype=np.complex128)
        full[: 2 * half + 1, : 2 * half + 1] = g
        full = np.roll(full, (-half, -half), axis=(0, 1))  # centre the kernel at the origin
        out[k] = np.fft.fft2(full)
    return out
