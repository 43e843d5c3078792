"""Parameter-free threshold adjacency statistics (mahotas.features.pftas), vectorised."""

from __future__ import annotations

import mahotas
import numpy as np

from cytocompare_classical.features.base import FILL_VALUE, MASKS, CellContext, FeatureFamily, Setting, check_channels
from cytocompare_classical.features.registry import register_family

#: the 8 neighbours of a pixel, as offsets into a 1-pixel padded image
_NEIGHBOURS = tuple((dy, dx) for dy in (0, 1, 2) for dx in (0, 1, 2) if (dy, dx) != (1, 1))


@register_family
class ThresholdAdjacency(FeatureFamily):
    """Parameter-free TAS (Hamilton et al. 2007, BMC Bioinformatics 8:110), as mahotas.pftas.

    The channel (as uint8) is set to 0 outside the mask; mahotas thresholds the image at Otsu's
    T, takes the mean mu and standard deviation s of the pixels above T, and binarises it three
    ways (mu - s < x < mu + s, x > mu - s, x > mu). For each binary image and its complement it
    histograms, over the pixels *outside* that image, how many of their 8 neighbours are inside
    it (9 bins, borders reflected): 54 values. Computed in numpy for all masks, channels and
    binary images at once (the tests check it against mahotas.features.pftas); mahotas' own
    loop costs ~8x more.
    """

    name = "tas"
    column_order = 80
    settings_spec = {
        # off in "quick": the costliest family per channel before it was vectorised
        "channels": Setting(("grey", "hed_h"), "channels thresholded", check=check_channels, quick=()),
    }
    feature_docs = {"vNN": "mahotas pftas value NN (3 threshold ranges x {image, complement} x 9 neighbour counts)"}

    def names(self) -> list[str]:
        return [f"{m}.{c}.tas.v{k:02d}" for m in MASKS for c in self.settings.channels for k in range(54)]

    def compute(self, ctx: CellContext) -> np.ndarray:
        chans = self.settings.channels
        out = np.full((len(MASKS), len(chans), 54), FILL_VALUE)
        # +1 keeps in-mask pixels non-zero, so that the zero background is below any threshold
        levels = {c: np.round(ctx.channels[c] * 254).astype(np.uint8) + 1 for c in chans}
        slots, binary = [], []
        for i, m in enumerate(MASKS):
            mask = ctx.masks[m]
            if mask.sum() < 4:
                continue
            for j, c in enumerate(chans):
                slots.append((i, j))
                binary.extend(pftas_binaries(np.where(mask, levels[c], 0).astype(np.uint8)))
        if slots:
            out[tuple(np.array(slots).T)] = tas_histograms(np.stack(binary)).reshape(len(slots), 54)
        return np.nan_to_num(out, nan=FILL_VALUE, posinf=FILL_VALUE, neginf=FILL_VALUE).ravel()


def pftas_binaries(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three binary images of mahotas' pftas for a uint8 image (the same expressions, so the
    same thresholds to the last bit)."""
    T = mahotas.otsu(img)
    above = img > T
    pixels = img[above].ravel()
    margin = pixels.std() if len(pixels) else 0
    mu = (above * img).sum() / (np.sum(above) + 1e-8)
    return (img > mu - margin) * (img < mu + margin), img > mu - margin, img > mu


def tas_histograms(binary: np.ndarray) -> np.ndarray:
    """(N, H, W) boolean images, taken three at a time → (N // 3, 54) TAS values, mahotas' order.

    For each image b: the fractions, among the pixels outside b, of those with k = 0..8
    neighbours in b (mahotas' ``_ctas(b)``), and the same for the complement of b; with borders
    reflected, a pixel's neighbours in the complement are 8 minus those in b.
    """
    n, h, w = binary.shape
    padded = np.pad(binary.astype(np.uint8), ((0, 0), (1, 1), (1, 1)), mode="edge")  # = reflect at width 1
    count = np.zeros((n, h, w), dtype=np.uint8)
    for dy, dx in _NEIGHBOURS:
        count += padded[:, dy : dy + h, dx : dx + w]
    # bin k of image b: outside b with k neighbours in b; bin 9 + k: inside b with k outside it
    keys = np.where(binary, 17 - count, count).astype(np.intp)
    keys += 18 * np.arange(n, dtype=np.intp)[:, None, None]
    hist = np.bincount(keys.ravel(), minlength=18 * n).reshape(n, 2, 9).astype(np.float64)
    totals = hist.sum(-1, keepdims=True)
    hist = np.divide(hist, totals, out=hist, where=totals > 0)
    # mahotas' order per pftas call: the three images' values, then the three complements'
    return hist.reshape(n // 3, 3, 2, 9).transpose(0, 2, 1, 3).reshape(n // 3, 54)
