"""Dataset-level Reinhard colour normalisation for external validation.

Reinhard et al. 2001 ("Color transfer between images") match the per-channel mean and standard
deviation of an image to a target's in a decorrelated colour space. Matching *each image* would
also erase real colour differences between classes (eosinophil granules, basophil staining), so
here the statistics are those of a whole data set: one linear map per channel of CIE L*a*b*
takes the external lab's overall colour distribution to the training lab's, and every external
image gets the same map. Only the test set is transformed; training images are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# sRGB (D65) <-> CIE XYZ <-> L*a*b*, the standard formulas (IEC 61966-2-1, CIE 1976)
_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]])
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = np.array([0.950456, 1.0, 1.088754])
_EPS = (6 / 29) ** 3


def rgb_to_lab(rgb_u8: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 sRGB to float64 L*a*b*."""
    c = rgb_u8.astype(np.float64) / 255.0
    lin = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = lin @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > _EPS, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """(..., 3) L*a*b* to uint8 sRGB (out-of-gamut values clipped)."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE
    lin = np.clip(xyz @ _XYZ_TO_RGB.T, 0, 1)
    c = np.where(lin > 0.0031308, 1.055 * lin ** (1 / 2.4) - 0.055, 12.92 * lin)
    return np.clip(np.rint(c * 255), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class LabStats:
    """Mean and standard deviation of L*, a*, b* over the pixels of a sample of images."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, images: object, max_images: int = 200, seed: int = 0) -> LabStats:
        """Statistics of up to ``max_images`` images (a seeded random sample) of an ImageSet."""
        n = len(images)  # type: ignore[arg-type]
        rng = np.random.default_rng(seed)
        pick = rng.choice(n, size=min(n, max_images), replace=False) if n else []
        total = np.zeros(3)
        total_sq = np.zeros(3)
        count = 0
        for i in sorted(int(j) for j in pick):
            lab = rgb_to_lab(images[i]).reshape(-1, 3)  # type: ignore[index]
            total += lab.sum(axis=0)
            total_sq += (lab ** 2).sum(axis=0)
            count += len(lab)
        if count == 0:
            raise ValueError("no images to compute colour statistics from")
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-12))
        return cls(tuple(float(v) for v in mean), tuple(float(v) for v in std))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ColourMap:
    """The per-channel linear map ``(x - source.mean) / source.std * target.std + target.mean`` in L*a*b*."""

    source: LabStats
    target: LabStats

    def __call__(self, rgb_u8: np.ndarray) -> np.ndarray:
        lab = rgb_to_lab(rgb_u8)
        src_m, src_s = np.asarray(self.source.mean), np.asarray(self.source.std)
        tgt_m, tgt_s = np.asarray(self.target.mean), np.asarray(self.target.std)
        return lab_to_rgb((lab - src_m) / src_s * tgt_s + tgt_m)

    def key(self) -> str:
        """A stable text form, part of the feature-cache key of transformed images."""
        vals = (*self.source.mean, *self.source.std, *self.target.mean, *self.target.std)
        return "reinhard:" + ",".join(f"{v:.4f}" for v in vals)
