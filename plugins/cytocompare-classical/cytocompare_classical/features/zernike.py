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
    A_nm = (n + 1)/pi * sum f V*_nm / sum f. The basis is computed once per mask and multiplied
    with all channels in one matrix product.
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
            theta = np.arctan2(y, x)
            basis = _basis(rho, theta, idx)  # (K, npix) complex
            weights = [ctx.channels[c][mask].astype(np.float64) for c in self.settings.channels]
            f = np.stack([np.ones_like(rho)] + weights, axis=1)
            tot = f.sum(0)
            a = np.abs(np.conj(basis) @ f)  # (K, nw)
            norm = np.array([(n + 1) / np.pi for n, _ in idx])[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                out[i] = (norm * a / np.where(tot > 0, tot, np.nan)).T
        return np.nan_to_num(out, nan=FILL_VALUE, posinf=FILL_VALUE, neginf=FILL_VALUE).ravel()


def _basis(rho: np.ndarray, theta: np.ndarray, idx: list[tuple[int, int]]) -> np.ndarray:
    """V_nm for all (n, m) in ``idx``: radial polynomial from cached powers of rho, angular
    part cos/sin(m theta) computed once per m."""
    maxn = max(n for n, _ in idx)
    powers = [np.ones_like(rho)]
    for _ in range(maxn):
        powers.append(powers[-1] * rho)
    ang = {m: np.exp(1j * m * theta) for m in sorted({m for _, m in idx})}
    out = np.empty((len(idx), rho.size), dtype=np.complex128)
    for k, (n, m) in enumerate(idx):
        radial = np.zeros_like(rho)
        for s in range((n - m) // 2 + 1):
            coef = (-1) ** s * factorial(n - s) / (factorial(s) * factorial((n + m) // 2 - s) * factorial((n - m) // 2 - s))
            radial += coef * powers[n - 2 * s]
        out[k] = radial * ang[m]
    return out
