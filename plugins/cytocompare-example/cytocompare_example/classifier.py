"""An image-input classifier: colour statistics + multinomial logistic regression."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cytocompare import BaseComponent, ImageSet, check_is_fitted
from cytocompare.protocols import Tags

from cytocompare_example.features import ColourStatistics


class ColourLogReg(ClassifierMixin, BaseComponent):
    """Colour and intensity statistics with logistic regression.

    A scikit-learn classifier (``ClassifierMixin`` gives ``score`` and the classifier tags; mixins
    come before the base class) that takes an :class:`ImageSet` instead of a feature matrix.

    A deliberately simple, honest baseline: if a method cannot beat it, it is not learning
    morphology.

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength of the logistic regression.
    class_weight : {"balanced"} or None, default="balanced"
        Re-weight classes inversely to their frequency (the paper's data are very imbalanced).
    max_iter : int, default=2000
        Iterations of the lbfgs solver.
    dark_fraction : float, default=0.2
        Passed to :class:`ColourStatistics`.
    """

    input: ClassVar[Literal["images"]] = "images"
    tags: ClassVar[Tags] = Tags(deterministic=True)

    def __init__(self, C: float = 1.0, class_weight: str | None = "balanced", max_iter: int = 2000,
                 dark_fraction: float = 0.2) -> None:
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.dark_fraction = dark_fraction

    def _features(self, images: ImageSet) -> np.ndarray:
        return ColourStatistics(dark_fraction=self.dark_fraction).transform(images)

    def fit(self, X: ImageSet, y: np.ndarray) -> ColourLogReg:
        """Fit on images ``X`` with string labels ``y``."""
        y = np.asarray(y).astype(str)
        self.model_ = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter),
        ).fit(self._features(X), y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X: ImageSet) -> np.ndarray:
        """Predicted class code of every image."""
        check_is_fitted(self, "model_")
        return self.model_.predict(self._features(X))

    def predict_proba(self, X: ImageSet) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(self._features(X))
