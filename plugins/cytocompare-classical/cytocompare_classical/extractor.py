"""``handcrafted``: segmentation + >6,000 named features per cell (the Krappe-style baseline)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import TransformerMixin

from cytocompare.base import BaseComponent
from cytocompare.errors import DataError
from cytocompare.protocols import Tags
from cytocompare_classical.features import FeatureSet, compute_features, feature_set
from cytocompare_classical.segmentation import SegmentationParams


_BLAS: Any = None


def _single_threaded_blas() -> Any:
    """A context pinning BLAS/OpenMP to one thread. Why: a multi-threaded BLAS sums in another
    order, so near-zero features (e.g. the Zernike z11 of a centred mask, ~1e-18) would depend on
    the thread count, i.e. on n_jobs and the machine, and a content-keyed feature cache must not.
    Parallelism comes from images across processes, not from BLAS threads on one small cell."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1)


def _one(rgb: np.ndarray, features: FeatureSet, segmentation: SegmentationParams,
         mask_path: str | None) -> tuple[np.ndarray, bool, str]:
    with _single_threaded_blas():
        row, seg = compute_features(rgb, features, segmentation=segmentation)
    if mask_path is not None:
        from cytocompare_classical.segmentation import save_masks

        save_masks(rgb, seg, mask_path)
    return row.astype(np.float32), seg.ok, seg.reason


class HandcraftedFeatures(TransformerMixin, BaseComponent):
    """Segment the central cell (nucleus, cytoplasm) and compute named handcrafted features.

    Parameters
    ----------
    profile : "full" (>6,000 features) or "quick" (a few hundred, for CI): the settings every
        feature family starts from.
    feature_settings : per-family overrides of the profile's settings, e.g.
        ``{"haralick": {"distances": [1, 2]}, "tas": {"channels": []}}`` (docs/features.md lists
        each family's settings; a ``channels`` setting may add the opt-in stain channels
        ``methylblue_od``/``eosin_od``, see ``features.stain.stain_feature_settings``); an
        unknown family or setting, or a bad value, raises
        ``ValueError`` naming it. Changes the feature names, hence the feature cache's key.
    segmentation : overrides of the segmentation's thresholds and sizes
        (:class:`~cytocompare_classical.segmentation.SegmentationParams`, e.g.
        ``{"min_violet": 20}``); an unknown key raises ``ValueError`` naming it.
    on_segmentation_failure : "fill" writes a row of fill values with ``qc.segmentation_ok = 0``
        and records the failure in ``failures_``; "raise" raises :class:`DataError` naming the
        image and the reason. In a run, keep "fill" and let the method's ``on_feature_failure``
        (keep | skip | stop) decide: the runner finds the failed rows with
        :meth:`failure_reasons` and lists them in ``feature_failures.csv``.
    n_jobs : joblib processes over cells inside ``transform`` (the runner already parallelises
        through its feature cache, hence 1).
    mask_dir : if set, an inspection PNG of every cell's masks is written there.

    Attributes
    ----------
    feature_names_ : column names (set by ``fit``).
    failures_ : (index, path, reason) of the cells whose segmentation failed in the last
        ``transform``.
    """

    tags: ClassVar[Tags] = Tags(deterministic=True)

    def __init__(self, profile: str = "full", on_segmentation_failure: str = "fill", n_jobs: int = 1,
                 mask_dir: str | None = None, feature_settings: Mapping[str, Mapping[str, Any]] | None = None,
                 segmentation: Mapping[str, Any] | None = None) -> None:
        self.profile = profile
        self.on_segmentation_failure = on_segmentation_failure
        self.n_jobs = n_jobs
        self.mask_dir = mask_dir
        self.feature_settings = feature_settings
        self.segmentation = segmentation

    def _features(self) -> FeatureSet:
        return feature_set(self.profile, self.feature_settings)

    def _validate(self) -> tuple[FeatureSet, SegmentationParams]:
        """The configured families and segmentation; raises ``ValueError`` naming a bad parameter."""
        features = self._features()
        segmentation = SegmentationParams.from_mapping(self.segmentation)
        if self.on_segmentation_failure not in ("fill", "raise"):
            raise ValueError(f"on_segmentation_failure must be 'fill' or 'raise', got {self.on_segmentation_failure!r}")
        if not isinstance(self.n_jobs, int) or self.n_jobs == 0:
            raise ValueError(f"n_jobs must be a non-zero integer, got {self.n_jobs!r}")
        return features, segmentation

    def validate_params(self) -> None:
        """Check every parameter without computing a feature: ``profile``, ``feature_settings``,
        ``segmentation``, ``on_segmentation_failure`` and ``n_jobs``. Raises ``ValueError``
        naming the bad one and the valid choices; ``cytocompare validate`` (the protocol's
        registry check) calls it, so a bad value is reported before any image is read."""
        self._validate()

    def fit(self, images: Any, y: np.ndarray | None = None) -> HandcraftedFeatures:
        """Stateless: validates the parameters and records the feature names."""
        features, _ = self._validate()
        self.feature_names_ = features.names()
        self.n_features_out_ = len(self.feature_names_)
        return self

    def get_feature_names_out(self) -> list[str]:
        return self._features().names()

    def transform(self, images: Any) -> np.ndarray:
        """float32 array (n_images, n_features); all values finite."""
        features, segmentation = self._validate()
        n = len(images)
        names = features.names()
        paths = [str(p) for p in getattr(images, "paths", [f"image {i}" for i in range(n)])]
        mask_paths: list[str | None] = [None] * n
        if self.mask_dir is not None:
            Path(self.mask_dir).mkdir(parents=True, exist_ok=True)
            mask_paths = [str(Path(self.mask_dir) / f"{i:06d}_{Path(p).stem}.png") for i, p in enumerate(paths)]
        if self.n_jobs == 1 or n < 2:
            results = [_one(images[i], features, segmentation, mask_paths[i]) for i in range(n)]
        else:
            from joblib import Parallel, delayed

            results = Parallel(n_jobs=self.n_jobs, backend="loky")(
                delayed(_one)(images[i], features, segmentation, mask_paths[i]) for i in range(n)
            )
        out = np.empty((n, len(names)), dtype=np.float32)
        self.failures_ = []
        for i, (row, ok, reason) in enumerate(results):
            if not ok:
                if self.on_segmentation_failure == "raise":
                    raise DataError(f"{paths[i]}: cell segmentation failed ({reason})")
                self.failures_.append((i, paths[i], reason))
            out[i] = row
        return out

    def failure_reasons(self, F: np.ndarray, images: Any | None = None) -> list[str | None]:
        """Which rows of ``F`` (features of this extractor) are failed cells, and why.

        The :class:`cytocompare.protocols.ReportsFeatureFailures` protocol: a row failed
        when its ``qc.segmentation_ok`` column is 0 (so a matrix read back from the feature cache
        tells it by itself, and the feature count is unchanged). The cause is the segmentation's
        own reason ("blank or uniform image: no contrast (...)", "no violet nucleus found
        (...)"), recovered by segmenting only the failed cells of ``images`` again (deterministic
        and cheap); without ``images`` it is the generic "cell segmentation failed".
        """
        names = self.get_feature_names_out()
        F = np.asarray(F)
        if F.ndim != 2 or F.shape[1] != len(names):
            raise ValueError(f"expected features of shape (n, {len(names)}) from this extractor, got {F.shape}")
        failed = np.flatnonzero(F[:, names.index(_QC_COLUMN)] < 0.5)
        reasons: list[str | None] = [None] * F.shape[0]
        if len(failed):
            segmentation = SegmentationParams.from_mapping(self.segmentation)
        for i in failed.tolist():
            reasons[i] = _GENERIC_FAILURE
            if images is not None:
                reasons[i] = _segmentation_reason(images, i, segmentation)
        return reasons


#: the qc column that marks a failed cell (the first column of every profile)
_QC_COLUMN = "qc.segmentation_ok"
_GENERIC_FAILURE = "cell segmentation failed (qc.segmentation_ok = 0)"


def _segmentation_reason(images: Any, i: int, segmentation: SegmentationParams) -> str:
    """Why the segmentation of ``images[i]`` fails (its reason, with the prefix of the log)."""
    from cytocompare_classical.segmentation import segment_cell

    try:
        seg = segment_cell(images[i], segmentation)
    except (DataError, OSError, ValueError) as exc:  # the file changed or vanished since: say so
        return f"{_GENERIC_FAILURE}; the image cannot be segmented again: {exc}"
    if seg.ok:  # cannot happen for a deterministic segmentation of the same image
        return _GENERIC_FAILURE
    return f"cell segmentation failed: {seg.reason}"
