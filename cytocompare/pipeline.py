"""features → selector → classifier as one image-input classifier.

The runner computes a method's features once for all images (cached by content) and then calls
:meth:`Pipeline.fit_features` / :meth:`Pipeline.predict_features` per fold, so only the
supervised steps (selector, classifier) ever see a fold's labels: they are fitted on the
training rows alone, which is the leakage guard.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from cytocompare.base import BaseComponent, check_is_fitted, clone, get_tags
from cytocompare.images import ImageSet
from cytocompare.protocols import Tags


def input_chain_problem(*, has_features: bool, has_selector: bool, classifier_input: str,
                        classifier_name: str) -> tuple[str, str] | None:
    """The one rule of a features → selector → classifier chain: ``None`` when it holds, else
    (the part at fault: ``features``, ``selector`` or ``classifier``; what is wrong).

    The protocol check (:mod:`cytocompare.config`) reports it with the method's location before a
    run starts; :class:`Pipeline` raises it for chains built in Python.
    """
    if not has_features and has_selector:
        return "selector", "a selector needs a 'features' extractor before it"
    if not has_features and classifier_input != "images":
        return "classifier", f"{classifier_name!r} takes features: add a 'features' extractor"
    if has_features and classifier_input != "features":
        return "features", f"{classifier_name!r} takes images, so it cannot follow a feature extractor"
    return None


class Pipeline(BaseComponent):
    """An image classifier made of a feature extractor, an optional selector and a classifier.

    Parameters
    ----------
    features : FeatureExtractor or None
        Per-image, stateless extractor. ``None`` means the classifier takes images itself.
    selector : FeatureSelector or None
        Supervised column selection (e.g. mRMR), fitted on training rows only.
    classifier : Classifier
        Takes features (``input = "features"``) or images (``input = "images"``).
    """

    input: ClassVar[Literal["images"]] = "images"

    def __init__(self, features: Any = None, selector: Any = None, classifier: Any = None) -> None:
        self.features = features
        self.selector = selector
        self.classifier = classifier

    def combined_tags(self) -> Tags:
        """A pipeline is deterministic only if every part is; it needs what any part needs."""
        parts = [get_tags(p) for p in (self.features, self.selector, self.classifier) if p is not None]
        gpu = "required" if any(t.gpu == "required" for t in parts) else (
            "optional" if any(t.gpu == "optional" for t in parts) else "never")
        return Tags(deterministic=bool(parts) and all(t.deterministic for t in parts),
                    requires=tuple(dict.fromkeys(r for t in parts for r in t.requires)), gpu=gpu)

    def _validate(self) -> None:
        if self.classifier is None:
            raise ValueError("a Pipeline needs a classifier")
        problem = input_chain_problem(
            has_features=self.features is not None, has_selector=self.selector is not None,
            classifier_input=getattr(self.classifier, "input", "features"),
            classifier_name=type(self.classifier).__name__,
        )
        if problem is not None:
            raise ValueError(problem[1])

    # -- feature-level API used by the runner (features computed once, outside) ---------------
    def fit_features(self, F: np.ndarray, y: np.ndarray) -> Pipeline:
        """Fit selector and classifier on a precomputed training feature matrix."""
        self._validate()
        y = np.asarray(y).astype(str)
        if self.selector is not None:
            self.selector_ = clone(self.selector).fit(F, y)
            F = self.selector_.transform(F)
        else:
            self.selector_ = None
        self.classifier_ = clone(self.classifier).fit(F, y)
        self.classes_ = np.asarray(self.classifier_.classes_)
        return self

    def _select(self, F: np.ndarray) -> np.ndarray:
        return F if self.selector_ is None else self.selector_.transform(F)

    def predict_features(self, F: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "classifier_")
        return np.asarray(self.classifier_.predict(self._select(F))).astype(str)

    def predict_proba_features(self, F: np.ndarray) -> np.ndarray | None:
        check_is_fitted(self, "classifier_")
        if not hasattr(self.classifier_, "predict_proba"):
            return None
        return np.asarray(self.classifier_.predict_proba(self._select(F)))

    # -- image-level API (the Classifier protocol) ---------------------------------------------
    def _transform(self, images: ImageSet) -> np.ndarray:
        return np.asarray(self.features_.transform(images), dtype=np.float32)

    def fit(self, X: ImageSet, y: np.ndarray) -> Pipeline:
        self._validate()
        if self.features is None:
            self.features_ = None
            self.selector_ = None
            self.classifier_ = clone(self.classifier).fit(X, np.asarray(y).astype(str))
            self.classes_ = np.asarray(self.classifier_.classes_)
            return self
        self.features_ = clone(self.features).fit(X)
        return self.fit_features(self._transform(X), y)

    def predict(self, X: ImageSet) -> np.ndarray:
        check_is_fitted(self, "classifier_")
        if self.features_ is None:
            return np.asarray(self.classifier_.predict(X)).astype(str)
        return self.predict_features(self._transform(X))

    def predict_proba(self, X: ImageSet) -> np.ndarray:
        check_is_fitted(self, "classifier_")
        if not hasattr(self.classifier_, "predict_proba"):
            raise AttributeError(f"{type(self.classifier_).__name__} has no predict_proba")
        if self.features_ is None:
            return np.asarray(self.classifier_.predict_proba(X))
        return np.asarray(self.classifier_.predict_proba(self._select(self._transform(X))))
