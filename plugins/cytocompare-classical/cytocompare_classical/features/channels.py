"""Colour channels: RGB, grey, HSV, CIE L*a*b* and haematoxylin/eosin stain densities.

Each channel is mapped to [0, 1] with a fixed range (not per image), so an image's overall
colour, which differs between cell types (e.g. blue blast cytoplasm vs. orange eosinophil
granules), is kept. MGG is not H&E, but its violet (azure/methylene-blue) and red (eosin)
components load on the ``hed_h`` and ``hed_e`` axes of scikit-image's Ruifrok-Johnston
deconvolution, which is enough to separate chromatin from granules.
"""

from __future__ import annotations

import numpy as np
from skimage import color

CHANNELS: dict[str, str] = {
    "red": "R of RGB / 255",
    "green": "G of RGB / 255 (violet chromatin absorbs green: the darkest channel for nuclei)",
    "blue": "B of RGB / 255",
    "grey": "luminance 0.2125 R + 0.7154 G + 0.0721 B (skimage rgb2gray)",
    "hsv_h": "HSV hue in [0, 1) (undefined for grey pixels: then 0, as in skimage)",
    "hsv_s": "HSV saturation",
    "hsv_v": "HSV value",
    "lab_l": "CIE L* / 100",
    "lab_a": "CIE a* mapped from [-128, 127] to [0, 1] (green-red axis)",
    "lab_b": "CIE b* mapped from [-128, 127] to [0, 1] (blue-yellow axis)",
    "hed_h": "haematoxylin-like stain density from skimage rgb2hed (Ruifrok-Johnston), fixed range",
    "hed_e": "eosin-like stain density from skimage rgb2hed, fixed range",
}


def _hed_range() -> tuple[np.ndarray, np.ndarray]:
    # the extremes of rgb2hed over a 16^3 grid of uint8 colours give a fixed per-channel range
    v = np.linspace(0, 255, 16).astype(np.uint8)
    grid = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(1, -1, 3)
    hed = color.rgb2hed(grid)[0]
    return hed.min(axis=0), hed.max(axis=0)


_HED_LO, _HED_HI = _hed_range()


def compute_channels(rgb: np.ndarray, names: tuple[str, ...] | list[str]) -> dict[str, np.ndarray]:
    """The requested channels of an (H, W, 3) uint8 image as float32 arrays in [0, 1]."""
    wanted = set(names)
    f = rgb.astype(np.float32) / 255.0
    out: dict[str, np.ndarray] = {}
    out["red"], out["green"], out["blue"] = f[..., 0], f[..., 1], f[..., 2]
    if "grey" in wanted:
        out["grey"] = f @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
    if wanted & {"hsv_h", "hsv_s", "hsv_v"}:
        out["hsv_h"], out["hsv_s"], out["hsv_v"] = _rgb2hsv(f)
    if wanted & {"lab_l", "lab_a", "lab_b"}:
        lab = color.rgb2lab(f).astype(np.float32)
        out["lab_l"] = lab[..., 0] / 100.0
        out["lab_a"] = (lab[..., 1] + 128.0) / 255.0
        out["lab_b"] = (lab[..., 2] + 128.0) / 255.0
    if wanted & {"hed_h", "hed_e"}:
        hed = color.rgb2hed(rgb)
        scaled = (hed - _HED_LO) / (_HED_HI - _HED_LO)
        out["hed_h"], out["hed_e"] = scaled[..., 0].astype(np.float32), scaled[..., 1].astype(np.float32)
    return {k: np.clip(out[k], 0.0, 1.0).astype(np.float32, copy=False) for k in names}


def _rgb2hsv(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, S, V) of ``skimage.color.rgb2hsv(f)`` for a float32 RGB image, the same float32 values:
    the same elementwise operations, with ``np.where`` instead of skimage's boolean-indexed
    assignments (where two channels tie for the maximum the later one's formula wins, as there).
    ``tests/test_features.py`` compares the two on every third 8-bit level of each channel."""
    # contiguous planes, and max / min pairwise (exact): reductions over a length-3 axis are slow
    r, g, b = (np.ascontiguousarray(f[..., k]) for k in range(3))
    v = np.maximum(np.maximum(r, g), b)
    delta = v - np.minimum(np.minimum(r, g), b)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = delta / v
        h = np.where(b == v, 4.0 + (r - g) / delta, np.where(g == v, 2.0 + (b - r) / delta, (g - b) / delta))
        h = (h / 6.0) % 1.0
    flat = delta == 0.0
    s[flat] = 0.0
    h[flat] = 0.0
    return tuple(np.where(np.isnan(x), np.float32(0), x) for x in (h, s, v))  # type: ignore[return-value]
