"""Quality-control features: whether segmentation succeeded."""

from __future__ import annotations

import numpy as np

from cytocompare_classical.features.base import CellContext, FeatureFamily
from cytocompare_classical.features.registry import register_family


@register_family
class QualityControl(FeatureFamily):
    """Segmentation outcome, so that failed cells are visible to the selector and classifier
    (their other features are all the fill value)."""

    name = "qc"
    column_order = 10  # first: a failed row is all fill values except this column
    feature_docs = {"segmentation_ok": "1 if a central nucleus was found, 0 if segmentation failed (row filled)"}

    def names(self) -> list[str]:
        return ["qc.segmentation_ok"]

    def compute(self, ctx: CellContext) -> np.ndarray:
        return np.array([1.0 if ctx.ok else 0.0])
