"""Zernike moment magnitudes of each mask, unweighted (shape) and intensity-weighted per channel."""

from __future__ import annotations

from math import factorial

import numpy as np

from cytocompare_classical.features.base import (
    FILL_VALUE, MASKS, CellContext, FeatureFamily, Setting, check_channels, check_positive_int,
)
from cytocompare_classical.features.registry import register_family


def zernike_indices(degree: int) -> list[tuple[int, int]]:
    """(n, m) with 0 <= m <= n <= degree and n - m even: 25 pairs for degree 8 (as mahotas)."""
    return [(n, m) for n in range(degree + 1) for m in range(n + 1) if (n - m) % 2 == 0]


@register_family
class Zernike(FeatureFamily):
    """|A_nm| Zernike moments (Teague 1980; the magnitudes are rotation invariant).

    The mask is mapped to the unit disk centred on its centroid, radius = the largest
    centroid-to-pixel distance (so moments are translation and scale invariant). For the
    ``mask`` weight f = 1 (pure shape, as mahotas.features.zernike_moments on a binary image);
    for a channel f = its [0, 1] value (how intensity is distributed over the shape).
    A_nm = (n + 1)/pi * sum f V*_nm / sum f. The basis is computed once per mask, in real
    arithmetic, and multiplied with all channels in one matrix product.
    """

    name = "zernike"
    column_order = 70
    settings_spec = {
        "channels": Setting(("grey", "hed_h", "hed_e", "hsv_s", "lab_a"),
                            "intensity weights, after the unweighted `mask` weight (pure shape)",
                            check=check_channels, quick=("grey",)),
        "degree": Setting(8, "highest order n (25 moments per weight at 8)", check=check_positive_int, quick=4),
    }
    feature_docs = {"zNM": "magnitude |A_nm| of the Zernike moment of order n = N, repetition m = M"}

    def _weights(self) -> list[str]:
        return ["mask", *self.settings.channels]

    def names(self) -> list[str]:
        idx = zernike_indices(self.settings.degree)
        return [f"{m}.{c}.zernike.z{n}{r}" for m in MASKS for c in self._weights() for n, r in idx]

    def compute(self, ctx: CellContext) -> np.ndarray:
        idx = zernike_indices(self.settings.degree)
        nw = len(self._weights())
        out = np.full((len(MASKS), nw, len(idx)), FILL_VALUE)
        for i, m in enumerate(MASKS):
            mask = ctx.masks[m]
            if mask.sum() < 3:
                continue
            ys, xs = np.nonzero(mask)
            y = ys - ys.mean()
            x = xs - xs.mean()
            r = np.hypot(y, x)
            rmax = r.max()
            if rmax <= 0:
                continue
            rho = r / rmax
            # cos and sin of theta = atan2(y, x), with theta = 0 at the centroid itself
            safe = np.where(r > 0, r, 1.0)
            cos1, sin1 = np.where(r > 0, x / safe, 1.0), y / safe
            re, im = _basis(rho, cos1, sin1, idx)  # V_nm = re + i im, each (K, npix)
            weights = [ctx.channels[c][mask].astype(np.float64) for c in self.settings.channels]
            f = np.stack([np.ones_like(rho)] + weights, axis=1)
            tot = f.sum(0)
            # sum f conj(V) = sum f re - i sum f im: one real product for both parts
            both = np.concatenate([re, im]) @ f  # (2K, nw)
            a = np.hypot(both[: len(idx)], both[len(idx) :])
            norm = np.array([(n + 1) / np.pi for n, _ in idx])[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                out[i] = (norm * a / np.where(tot > 0, tot, np.nan)).T
        return np.nan_to_num(out, nan=FILL_VALUE, posinf=FILL_VALUE, neginf=FILL_VALUE).ravel()


def _basis(rho: np.ndarray, cos1: np.ndarray, sin1: np.ndarray,
           idx: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary parts of V_nm = R_nm(rho) exp(i m theta) for all (n, m) in ``idx``:
    the radial polynomials as one product of their coefficients with the powers of rho, the
    angular part cos/sin(m theta) by the angle-addition recurrence from cos/sin(theta) (no
    complex exponential: ~4x cheaper, equal to rounding)."""
    maxn = max(n for n, _ in idx)
    powers = np.empty((maxn + 1, rho.size))
    powers[0] = 1.0
    for k in range(1, maxn + 1):
        powers[k] = powers[k - 1] * rho
    coef = np.zeros((len(idx), maxn + 1))
    for k, (n, m) in enumerate(idx):
        for s in range((n - m) // 2 + 1):
            coef[k, n - 2 * s] = (-1) ** s * factorial(n - s) / (
                factorial(s) * factorial((n + m) // 2 - s) * factorial((n - m) // 2 - s))
    radial = coef @ powers  # (K, npix)
    cos_m, sin_m = np.empty((maxn + 1, rho.size)), np.empty((maxn + 1, rho.size))
    cos_m[0], sin_m[0] = 1.0, 0.0
    for m in range(1, maxn + 1):
        cos_m[m] = cos_m[m - 1] * cos1 - sin_m[m - 1] * sin1
        sin_m[m] = sin_m[m - 1] * cos1 + cos_m[m - 1] * sin1
    ms = np.array([m for _, m in idx])
    return radial * cos_m[ms], radial * sin_m[ms]
