"""Throwaway plugin modules used by the plugin-system tests (datasette's tests/plugins pattern)."""

import numpy as np

from cytocompare import BaseComponent, hookimpl


class MajorityClassifier(BaseComponent):
    """Predicts the most frequent training class (a floor every method must beat)."""

    input = "features"
    tags = {"deterministic": True}

    def __init__(self, strategy: str = "most_frequent") -> None:
        self.strategy = strategy

    def fit(self, X, y):
        values, counts = np.unique(np.asarray(y).astype(str), return_counts=True)
        self.classes_ = values
        self.majority_ = values[np.argmax(counts)]
        return self

    def predict(self, X):
        from cytocompare import check_is_fitted

        check_is_fitted(self, "majority_")
        return np.full(len(X), self.majority_)


class GoodPlugin:
    @hookimpl
    def register_classifiers(self, register):
        register("majority", MajorityClassifier, description="most frequent class")


class ClashingPlugin:
    """Registers a name that GoodPlugin also registers."""

    @hookimpl
    def register_classifiers(self, register):
        register("majority", "tests.plugins.dummy:MajorityClassifier")


class MisspeltHookPlugin:
    @hookimpl
    def register_clasifiers(self, register):  # misspelt on purpose
        register("x", MajorityClassifier)


class ProtocolUsingPlugin:
    """Uses only a subset of the hook's arguments: allowed, so hooks can grow later."""

    @hookimpl
    def register_evaluators(self):
        pass
