"""Parameter-free threshold adjacency statistics (mahotas.features.pftas)."""

from __future__ import annotations

import mahotas
import numpy as np

from cytocompare_classical.features.base import FILL_VALUE, MASKS, CellContext, FeatureFamily, Setting, check_channels
from cytocompare_classical.features.registry import register_family


@register_family
class ThresholdAdjacency(FeatureFamily):
    """Parameter-free TAS (Hamilton et al. 2007, BMC Bioinformatics 8:110) via mahotas.pftas.

    The channel (as uint8) is set to 0 outside the mask; mahotas thresholds the remaining
    pixels at mean ± their standard deviation (3 ranges) and, for each binary image and its
    complement, histograms the number of set 8-neighbours of set pixels (9 bins): 54 values.
    """

    name = "tas"
    column_order = 80
    settings_spec = {
        # off in "quick": mahotas' pftas is the costliest family per channel
        "channels": Setting(("grey", "hed_h"), "channels thresholded", check=check_channels, quick=()),
    }
    feature_docs = {"vNN": "mahotas pftas value NN (3 threshold ranges x {image, complement} x 9 neighbour counts)"}

    def names(self) -> list[str]:
        return [f"{m}.{c}.tas.v{k:02d}" for m in MASKS for c in self.settings.channels for k in range(54)]

    def compute(self, ctx: CellContext) -> np.ndarray:
        blocks = []
        for m in MASKS:
            mask = ctx.masks[m]
            for c in self.settings.channels:
                if mask.sum() < 4:
                    blocks.append(np.full(54, FILL_VALUE))
                    continue
                # +1 keeps in-mask pixels non-zero: mahotas ignores zero pixels when thresholding
                img = np.where(mask, np.round(ctx.channels[c] * 254).astype(np.uint8) + 1, 0).astype(np.uint8)
                blocks.append(np.asarray(mahotas.features.pftas(img), dtype=np.float64))
        return np.nan_to_num(np.concatenate(blocks), nan=FILL_VALUE, posinf=FILL_VALUE, neginf=FILL_VALUE)
