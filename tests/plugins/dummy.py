"""Throwaway plugin modules used by the plugin-system tests (datasette's tests/plugins pattern)."""

import numpy as np

from cytocompare import BaseComponent, hookimpl
from cytocompare.protocols import Tags


class MajorityClassifier(BaseComponent):
    """Predicts the most frequent training class (a floor every method must beat)."""

    input = "features"
    tags = Tags(deterministic=True)

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


class ImageMajorityClassifier(MajorityClassifier):
    """The same floor, taking images (for runner tests of image classifiers)."""

    input = "images"


class MeanColour(BaseComponent):
    """Mean R, G, B of each image: a tiny, deterministic feature extractor."""

    tags = Tags(deterministic=True)

    def fit(self, images, y=None):
        return self

    def get_feature_names_out(self):
        return ["r", "g", "b"]

    def transform(self, images):
        return np.array([images[i].reshape(-1, 3).mean(axis=0) for i in range(len(images))], dtype=np.float32)


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


class CheckpointingClassifier(MajorityClassifier):
    """The majority classifier taking images and "training in epochs" into ``checkpoint_dir`` (like
    the CNNs): it records where it was told to checkpoint, resumes from a marker file, and can be
    told to crash."""

    input = "images"
    seen: list[tuple[str | None, bool]] = []  # (checkpoint_dir, resumed) of every fit, for the tests
    crash_once = False

    def __init__(self, checkpoint_dir: str | None = None, strategy: str = "most_frequent") -> None:
        super().__init__(strategy)
        self.checkpoint_dir = checkpoint_dir

    def fit(self, images, y):
        from pathlib import Path

        resumed = False
        if self.checkpoint_dir is not None:
            marker = Path(self.checkpoint_dir) / "last.txt"
            resumed = marker.exists()
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("epoch 1 done\n")
        type(self).seen.append((self.checkpoint_dir, resumed))
        if type(self).crash_once:
            type(self).crash_once = False
            raise KeyboardInterrupt("simulated interruption after epoch 1")
        return super().fit(images, y)


class CheckpointingPlugin:
    @hookimpl
    def register_classifiers(self, register):
        register("checkpointing", CheckpointingClassifier, description="majority class, trains into checkpoint_dir")


class ReportingClassifier(MajorityClassifier):
    """The majority classifier on images, with the optional runner capabilities: it says what
    its fit chose (ReportsFit) and writes one artifact file (WritesArtifacts)."""

    input = "images"

    def __init__(self, strategy: str = "most_frequent", random_state: int = 0, n_jobs: int | None = None) -> None:
        super().__init__(strategy)
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit_report(self):
        return {"variant": "majority", "best_params": {"strategy": self.strategy}, "n_jobs": self.n_jobs}

    def write_artifacts(self, out_dir, images, y_true):
        from pathlib import Path

        path = Path(out_dir) / "majority.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{self.majority_} for {len(images)} images\n")
        return [path]


class ReportingPlugin:
    @hookimpl
    def register_classifiers(self, register):
        register("reporting", ReportingClassifier, description="majority class, reports its fit")
