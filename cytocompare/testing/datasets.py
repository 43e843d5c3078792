"""Small, seeded synthetic data sets for the conformance kit and unit tests (< 1 s to make).

The images look like stained smears in the crudest way: a light background, a pink cytoplasm
disc and a violet nucleus disc at the centre, plus noise. Classes differ in nucleus size and
colour, so any working method separates them; they are NOT a substitute for real images.
"""

from __future__ import annotations

import numpy as np

from cytocompare.images import ImageSet

CLASSES = ("AAA", "BBB", "CCC")

# nucleus radius (fraction of size), nucleus RGB, cytoplasm RGB per class
_LOOKS = (
    (0.16, (90, 40, 140), (225, 170, 200)),
    (0.26, (60, 30, 110), (210, 190, 220)),
    (0.36, (120, 60, 170), (235, 200, 185)),
)


def make_cell(size: int, nucleus_frac: float, nucleus_rgb: tuple[int, int, int], cyto_rgb: tuple[int, int, int],
              rng: np.random.Generator) -> np.ndarray:
    """One synthetic cell image (H, W, 3) uint8."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = (size - 1) / 2 + rng.normal(0, size * 0.02, 2)
    r = np.hypot(yy - cy, xx - cx)
    img = np.empty((size, size, 3), dtype=np.float64)
    img[:] = (238, 232, 236)  # bright background, as under a microscope
    img[r < size * 0.44] = cyto_rgb
    img[r < size * nucleus_frac * rng.uniform(0.9, 1.1)] = nucleus_rgb
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_tiny_images(n_per_class: int = 8, size: int = 48, classes: tuple[str, ...] = CLASSES,
                     seed: int = 0, counts: dict[str, int] | None = None) -> ImageSet:
    """A seeded in-memory :class:`ImageSet` of easy synthetic cells (string labels)."""
    rng = np.random.default_rng(seed)
    arrays, labels = [], []
    for i, cls in enumerate(classes):
        frac, nuc, cyto = _LOOKS[i % len(_LOOKS)]
        frac = frac + 0.02 * (i // len(_LOOKS))
        for _ in range((counts or {}).get(cls, n_per_class)):
            arrays.append(make_cell(size, frac, nuc, cyto, rng))
            labels.append(cls)
    order = rng.permutation(len(arrays))
    return ImageSet.from_arrays([arrays[j] for j in order], [labels[j] for j in order])


def make_tiny_features(n_per_class: int = 20, n_features: int = 10, classes: tuple[str, ...] = CLASSES,
                       seed: int = 0, separation: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, linearly separable feature matrix with string labels."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for i, cls in enumerate(classes):
        centre = np.zeros(n_features)
        centre[i % n_features] = separation
        X.append(rng.normal(centre, 1.0, (n_per_class, n_features)))
        y += [cls] * n_per_class
    order = rng.permutation(len(y))
    return np.vstack(X)[order].astype(np.float32), np.asarray(y)[order]
