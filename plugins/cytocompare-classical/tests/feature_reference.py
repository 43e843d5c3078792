"""Plain, readable versions of the vectorised feature computations, for the tests only.

They share no code with ``cytocompare_classical.features``: loops over pixels pairs and matrix
cells, the textbook formulas as written, complex exponentials. Slow, and each one says what
the fast family must equal (to rounding).
"""

from __future__ import annotations

from math import factorial

import numpy as np

DIRECTIONS = ((0, 1), (1, 1), (1, 0), (1, -1))  # 0°, 45°, 90°, 135° as (dy, dx)


def glcm(q: np.ndarray, mask: np.ndarray, levels: int, d: int, direction: tuple[int, int]) -> np.ndarray:
    """Symmetric co-occurrence counts of the pairs (p, p + d * direction) with both in ``mask``."""
    dy, dx = direction[0] * d, direction[1] * d
    h, w = q.shape
    out = np.zeros((levels, levels))
    for y, x in zip(*np.nonzero(mask)):
        y2, x2 = y + dy, x + dx
        if 0 <= y2 < h and 0 <= x2 < w and mask[y2, x2]:
            out[q[y, x], q[y2, x2]] += 1
    return out + out.T


def haralick(counts: np.ndarray) -> np.ndarray:
    """The 13 features of one co-occurrence count matrix, log base 2 (the family's docs)."""
    L = counts.shape[0]
    p = counts / counts.sum()
    px, py = p.sum(1), p.sum(0)
    i = np.arange(L)
    mux, muy = (i * px).sum(), (i * py).sum()
    sx, sy = np.sqrt(((i - mux) ** 2 * px).sum()), np.sqrt(((i - muy) ** 2 * py).sum())
    psum, pdiff = np.zeros(2 * L - 1), np.zeros(L)
    asm = contrast = cross = variance = idm = 0.0
    for a in range(L):
        for b in range(L):
            v = p[a, b]
            psum[a + b] += v
            pdiff[abs(a - b)] += v
            asm += v * v
            contrast += (a - b) ** 2 * v
            cross += a * b * v
            variance += (a - mux) ** 2 * v
            idm += v / (1 + (a - b) ** 2)

    def entropy(x: np.ndarray) -> float:
        x = x[x > 0]
        return float(-(x * np.log2(x)).sum())

    k = np.arange(2 * L - 1)
    savg = (k * psum).sum()
    svar = ((k - savg) ** 2 * psum).sum()
    dmean = (i * pdiff).sum()
    dvar = ((i - dmean) ** 2 * pdiff).sum()
    hxy, hx, hy = entropy(p.ravel()), entropy(px), entropy(py)
    outer = np.outer(px, py)
    hxy1 = float(-(p[p > 0] * np.log2(outer[p > 0])).sum())
    hxy2 = entropy(outer.ravel())
    corr = (cross - mux * muy) / (sx * sy) if sx * sy > 1e-12 else 0.0
    imc1 = (hxy - hxy1) / max(hx, hy) if max(hx, hy) > 1e-12 else 0.0
    imc2 = np.sqrt(max(1 - np.exp(-2 * (hxy2 - hxy)), 0.0))
    return np.array([asm, contrast, corr, variance, idm, savg, svar, entropy(psum), hxy, dvar,
                     entropy(pdiff), imc1, imc2])


def zernike(mask: np.ndarray, weight: np.ndarray, degree: int) -> np.ndarray:
    """|A_nm| for 0 <= m <= n <= degree, n - m even, on the unit disk of the mask's centroid and
    largest centroid distance: A_nm = (n + 1)/pi sum f conj(V_nm) / sum f."""
    ys, xs = np.nonzero(mask)
    y, x = ys - ys.mean(), xs - xs.mean()
    rho = np.hypot(y, x) / np.hypot(y, x).max()
    theta = np.arctan2(y, x)
    f = weight[mask].astype(np.float64)
    out = []
    for n in range(degree + 1):
        for m in range(n + 1):
            if (n - m) % 2:
                continue
            radial = sum((-1) ** s * factorial(n - s) / (factorial(s) * factorial((n + m) // 2 - s)
                         * factorial((n - m) // 2 - s)) * rho ** (n - 2 * s) for s in range((n - m) // 2 + 1))
            v = radial * np.exp(1j * m * theta)
            out.append(abs((n + 1) / np.pi * (f * np.conj(v)).sum() / f.sum()))
    return np.array(out)
