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


# ---------------------------------------------------------------------------------------------
# Macenko stain normalisation, dataset-level
#
# Macenko et al. 2009 ("A method for normalizing histology slides for quantitative analysis"):
# in optical density (Beer-Lambert: OD = -log(I / I0) is linear in the stain amounts) the
# pixels of a two-stain image lie in the plane of the two stain vectors; the stain vectors are
# the extreme angles (robust 1st and 99th percentiles) of the pixels projected onto the plane of
# the two largest principal directions. As with Reinhard above, the statistics are those of a
# whole data set (a seeded pixel sample of up to 200 images), so one map serves every image and
# the colour differences between classes survive. In MGG the two "stains" are the azure/methylene
# blue-violet of nuclei and the eosin pink of erythrocytes and granules.

_I0 = 255.0
# background: pixels whose OD vector is shorter than this are left out of the fit. The original
# drops a pixel when ANY channel is below 0.15, which also drops pure eosin (it barely absorbs red)
# and biases the pink vector towards the violet; the length keeps them.
_MACENKO_BETA = 0.15
_MACENKO_ALPHA = 1.0  # percentile of the angles taken as the extreme stain directions


def optical_density(rgb_u8: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB to optical density ``-log((I + 1) / I0)`` (+1: no log of zero)."""
    return -np.log((rgb_u8.astype(np.float64) + 1.0) / _I0)


def _stain_vectors(od: np.ndarray) -> np.ndarray:
    """(2, 3) unit stain vectors of (N, 3) tissue OD pixels; row 0 the one absorbing red more
    (:class:`StainMap` pairs the rows of two sets by similarity, not by this order)."""
    if len(od) < 10:
        raise ValueError(f"only {len(od)} stained pixels (|OD| >= {_MACENKO_BETA}): too few to estimate stain vectors")
    _, eigvecs = np.linalg.eigh(np.cov(od, rowvar=False))
    plane = eigvecs[:, 1:3]  # the two largest principal directions
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # point into positive OD
    proj = od @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [_MACENKO_ALPHA, 100 - _MACENKO_ALPHA])
    v = np.stack([plane @ [np.cos(a), np.sin(a)] for a in (lo, hi)])
    v = v * np.where(v.sum(axis=1, keepdims=True) < 0, -1.0, 1.0)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    return v if v[0, 0] >= v[1, 0] else v[::-1]


@dataclass(frozen=True)
class StainStats:
    """Stain vectors (2 x 3, unit, the one absorbing red more first) and the 99th-percentile amount of each
    stain over the stained pixels of a sample of images."""

    vectors: tuple[tuple[float, float, float], tuple[float, float, float]]
    max_amount: tuple[float, float]

    @classmethod
    def of(cls, images: object, max_images: int = 200, seed: int = 0, pixels_per_image: int = 2000) -> StainStats:
        """Statistics of up to ``max_images`` images (a seeded random sample) of an ImageSet."""
        n = len(images)  # type: ignore[arg-type]
        rng = np.random.default_rng(seed)
        pick = rng.choice(n, size=min(n, max_images), replace=False) if n else []
        samples = []
        for i in sorted(int(j) for j in pick):
            od = optical_density(images[i]).reshape(-1, 3)  # type: ignore[index]
            od = od[np.linalg.norm(od, axis=1) >= _MACENKO_BETA]
            if len(od) > pixels_per_image:
                od = od[rng.choice(len(od), size=pixels_per_image, replace=False)]
            samples.append(od)
        if not samples:
            raise ValueError("no images to compute stain statistics from")
        od = np.concatenate(samples)
        vectors = _stain_vectors(od)
        amounts = np.linalg.lstsq(vectors.T, od.T, rcond=None)[0]
        max_amount = np.percentile(amounts, 99, axis=1)
        return cls(tuple(tuple(float(x) for x in row) for row in vectors),  # type: ignore[arg-type]
                   (float(max_amount[0]), float(max_amount[1])))


@dataclass(frozen=True)
class StainMap:
    """Macenko's map: each pixel's stain amounts under the source's vectors, scaled to the
    target's 99th-percentile amounts, recomposed with the target's vectors."""

    source: StainStats
    target: StainStats

    def _paired_source(self) -> tuple[np.ndarray, np.ndarray]:
        """The source's vectors and amounts in the order that pairs each with the more similar
        target vector: which of two stains absorbs red more differs between labs' MGG."""
        vs, ms = np.asarray(self.source.vectors), np.asarray(self.source.max_amount)
        vt = np.asarray(self.target.vectors)
        if np.trace(vs @ vt.T) < np.trace(vs[::-1] @ vt.T):
            return vs[::-1], ms[::-1]
        return vs, ms

    def __call__(self, rgb_u8: np.ndarray) -> np.ndarray:
        od = optical_density(rgb_u8).reshape(-1, 3)
        vs, ms = self._paired_source()
        unmix = np.linalg.pinv(vs.T)  # (2, 3)
        amounts = od @ unmix.T * (np.asarray(self.target.max_amount) / ms)
        out = _I0 * np.exp(-(amounts @ np.asarray(self.target.vectors))) - 1.0
        return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(rgb_u8.shape)

    def key(self) -> str:
        """A stable text form, part of the feature-cache key of transformed images."""
        vals = [*np.ravel(self.source.vectors), *self.source.max_amount, *np.ravel(self.target.vectors),
                *self.target.max_amount]
        return "macenko:" + ",".join(f"{v:.4f}" for v in vals)
