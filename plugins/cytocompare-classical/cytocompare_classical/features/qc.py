"""Quality-control features: whether segmentation succeeded."""

from __future__ import annotations

import numpy as np

from cytocompare_classical.features.base import CellContext, FeatureFamily, Profile


class QualityControl(FeatureFamily):
    """Segmentation outcome, so that failed cells are visible to the selector and classifier
    (their other features are all the fill value)."""

    name = "qc"
    feature_docs = {"segmentation_ok": "1 if a central nucleus was found, 0 if segmentation failed (row filled)"}

    def names(self, profile: Profile) -> list[str]:
        return ["qc.segmentation_ok"]

    def compute(self, ctx: CellContext, profile: Profile) -> np.ndarray:
        return np.array([1.0 if ctx.ok else 0.0])
