"""The component protocols (``typing.Protocol``): what a plugin's objects must look like.

They follow scikit-learn: ``fit`` returns ``self``, fitted state lives in attributes ending with
``_``, and ``get_params``/``set_params`` come from the constructor (inherit
:class:`cytocompare.base.BaseComponent` to get them for free). The conformance kit
(:mod:`cytocompare.testing`) checks the behaviour behind these shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from typing import Self

    from cytocompare.images import ImageSet


@runtime_checkable
class Component(Protocol):
    def get_params(self, deep: bool = True) -> dict[str, Any]: ...
    def set_params(self, **params: Any) -> Any: ...


@runtime_checkable
class FeatureExtractor(Component, Protocol):
    """Maps each image to a fixed-length vector. Per-image and stateless (no labels), so the
    runner may compute features once for all images and cache them; anything fitted on labels
    belongs in a :class:`FeatureSelector` or the classifier, fitted on training rows only."""

    def fit(self, images: ImageSet, y: np.ndarray | None = None) -> Self: ...
    def transform(self, images: ImageSet) -> np.ndarray:
        """Return a float32 array of shape (n_images, n_features)."""
        ...
    def get_feature_names_out(self) -> list[str]:
        """Stable, unique feature names in column order (known before any image is seen)."""
        ...


@runtime_checkable
class FeatureSelector(Component, Protocol):
    """Supervised selection of columns (e.g. mRMR), fitted on the training rows of one split."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Self: ...
    def transform(self, X: np.ndarray) -> np.ndarray: ...
    def get_support(self, indices: bool = False) -> np.ndarray: ...


@runtime_checkable
class Classifier(Component, Protocol):
    """``input = "features"`` takes an (n, d) float array; ``input = "images"`` an ImageSet.

    Labels are strings (class codes). After ``fit``, ``classes_`` is the sorted array of the
    classes seen. ``predict_proba`` (optional) returns columns in the order of ``classes_``.
    """

    input: ClassVar[Literal["features", "images"]]

    def fit(self, X: Any, y: np.ndarray) -> Self: ...
    def predict(self, X: Any) -> np.ndarray: ...


# ---------------------------------------------------------------- optional capabilities
# The runner never asks a component for an attribute by name: it checks these protocols. Each has
# a conformance check (cytocompare.testing.checks) so that a plugin learns of a mistake in its own
# test suite, not in a user's run.


@dataclass(frozen=True)
class Tags:
    """Facts about a component class that the runner and the conformance kit read.

    Declared on the class only (``tags: ClassVar[Tags] = Tags(deterministic=True)``) and read with
    :func:`cytocompare.base.get_tags`; the registration callback takes none, so there is one home.
    """

    #: same data and same ``random_state`` give identical output (the kit checks it)
    deterministic: bool = False
    #: import names of the heavy backends the component needs (e.g. ``("torch",)``)
    requires: tuple[str, ...] = ()
    #: whether it uses a GPU: never, when there is one, or only with one
    gpu: Literal["never", "optional", "required"] = "never"
    #: a classifier that trains across the processes of a ``torchrun`` launch (DistributedDataParallel,
    #: each rank a shard of every epoch); under torchrun only such methods run (cytocompare.distributed)
    distributed: bool = False


@runtime_checkable
class Checkpointing(Protocol):
    """A classifier that saves its training state into ``checkpoint_dir`` and resumes from it.

    When the protocol leaves ``checkpoint_dir`` at ``None`` the runner gives each fold a folder of
    the run directory, so that an interrupted run resumes inside the fold.
    """

    checkpoint_dir: str | None


@runtime_checkable
class WritesArtifacts(Protocol):
    """A fitted classifier that writes extra files (saliency maps, UMAP) for a fold's test images."""

    def write_artifacts(self, out_dir: Path, images: ImageSet, y_true: np.ndarray) -> list[Path]: ...


@runtime_checkable
class ReportsFit(Protocol):
    """A fitted component that says what its fit chose (a variant, the best hyper-parameters).

    The dictionary (JSON-able values only) is recorded with the fold's predictions.
    """

    def fit_report(self) -> dict[str, Any]: ...


@runtime_checkable
class ReportsFeatureFailures(Protocol):
    """A feature extractor that can say which rows of its features failed, and why.

    ``failure_reasons(F, images)`` gets a feature matrix this extractor computed (possibly read
    back from the feature cache) and the images of its rows, in order, and returns one entry per
    row: ``None`` for a good row, else a short cause ("no contrast (green spread 0.0 < 30.0)").
    Which rows failed must follow from ``F`` alone (a cached matrix is all there is); ``images``
    may be used to say *why* for those rows only (e.g. by re-running a cheap, deterministic
    step), and may be ``None``, in which case a generic cause is given.
    """

    def failure_reasons(self, F: np.ndarray, images: Any | None = None) -> list[str | None]: ...


@dataclass(frozen=True)
class EvaluationContext:
    """What an evaluator may need beyond the labels."""

    labels: Sequence[str]
    tolerated_pairs: frozenset[frozenset[str]] = frozenset()
    no_call_classes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MetricRow:
    """One number: ``metric`` for ``cls`` (``""`` for a whole-run figure)."""

    metric: str
    cls: str
    value: float


@runtime_checkable
class Evaluator(Protocol):
    """Turns true and predicted labels of one split into metric rows."""

    def evaluate(self, y_true: np.ndarray, y_pred: np.ndarray, context: EvaluationContext) -> list[MetricRow]: ...


@runtime_checkable
class Reporter(Protocol):
    """Writes files a person can open (CSV, Markdown, PNG, HTML) from a finished run directory."""

    def report(self, run_dir: Path) -> list[Path]: ...
