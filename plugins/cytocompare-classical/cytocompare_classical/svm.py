"""SVM classifiers of the classical arm: exact RBF SVC, and Nystroem + linear SVM for paper scale.

Both are scikit-learn classifiers (``ClassifierMixin``): they standardise the features (fitted on
the training rows), accept string labels and expose ``classes_`` sorted. Hyper-parameters are
chosen by stratified k-fold CV on the *training* data passed to ``fit`` only; the test rows never
reach the search. What a fit chose is reported by ``fit_report()`` (the ``ReportsFit`` protocol).
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.kernel_approximation import Nystroem
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import QuantileTransformer, StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.utils.metaestimators import available_if
# scikit-learn's parameter-constraint types: private module, but the documented way for
# ``_parameter_constraints`` (scikit-learn >= 1.2; its estimators use exactly these)
from sklearn.utils._param_validation import Interval, StrOptions

from cytocompare.base import BaseComponent, check_is_fitted
from cytocompare.protocols import Tags

from cytocompare_classical._validation import validate_features, validate_training_data

__all__ = ["RBFSVM", "NystroemSVM", "DEFAULT_RBF_GRID", "DEFAULT_NYSTROEM_GRID"]

#: the default search of RBFSVM (``param_grid="default"``); gamma acts on standardised features
DEFAULT_RBF_GRID: dict[str, list[Any]] = {"C": [1, 10, 100], "gamma": ["scale", 0.01, 0.001]}
#: the default search of NystroemSVM (``param_grid="default"``): C of the linear SVM only
DEFAULT_NYSTROEM_GRID: dict[str, list[Any]] = {"C": [0.1, 1, 10]}
#: the hyper-parameters a ``param_grid`` may search (both SVMs)
_SEARCHABLE = ("C", "gamma")

#: constraints both SVMs share (scikit-learn's ``_parameter_constraints`` format)
_COMMON_CONSTRAINTS: dict[str, list[Any]] = {
    "C": [Interval(Real, 0, None, closed="neither")],
    "class_weight": [StrOptions({"balanced"}), dict, None],
    "param_grid": [StrOptions({"default"}), dict, None],
    "cv": [Interval(Integral, 2, None, closed="left")],
    "scoring": [str, callable],
    "max_train_samples": [Interval(Integral, 1, None, closed="left"), None],
    "n_jobs": [Integral, None],
    "random_state": [Interval(Integral, 0, 2**32 - 1, closed="both"), None],
}


def _stratified_subsample(y: np.ndarray, n: int, min_per_class: int, seed: int | None) -> np.ndarray:
    """Sorted row indices of a class-proportional subsample of about ``n`` rows.

    Every class keeps at least ``min(count, min_per_class)`` rows, so CV folds stay stratified
    even for rare classes (the subsample may exceed ``n`` by those few rows).
    """
    rng = np.random.default_rng(seed)
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    frac = min(1.0, n / y.shape[0])
    keep = []
    for c in range(classes.size):
        rows = np.flatnonzero(inv == c)
        m = max(int(round(counts[c] * frac)), min(counts[c], min_per_class))
        keep.append(rng.choice(rows, size=min(m, counts[c]), replace=False))
    return np.sort(np.concatenate(keep))


def _jsonable(value: Any) -> Any:
    """Plain Python values for a JSON fit report (numpy scalars from a grid become int/float)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def _uncalibrated(est: Any) -> bool:
    """The final model's predictions follow its margins (no probability calibration on top)."""
    return not getattr(est, "probability", False)


class _SVMBase(ClassifierMixin, BaseComponent):
    """Shared fit logic: label coding, optional subsampled grid search, final fit on all rows.

    A subclass names its ``variant`` and ``default_grid`` and builds its ``_pipeline``; the search
    keys and values of "C" and "gamma" can be redirected (``_search_key``/``_search_values``).
    """

    input: ClassVar[str] = "features"
    tags: ClassVar[Tags] = Tags(deterministic=True)
    variant: ClassVar[str] = ""
    #: what ``param_grid="default"`` searches
    default_grid: ClassVar[dict[str, list[Any]]] = {}

    def _pipeline(self, n_samples: int, n_features: int, final: bool = False,
                  **overrides: Any) -> Pipeline:  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------ hyper-parameters
    def _grid(self) -> dict[str, list[Any]] | None:
        """The search: None (use C and gamma as given), the default grid, or the user's dict."""
        if self.param_grid is None:
            return None
        if isinstance(self.param_grid, str):
            if self.param_grid != "default":
                raise ValueError(f"param_grid must be 'default', a dict or None, got {self.param_grid!r}")
            return self.default_grid
        unknown = set(self.param_grid) - set(_SEARCHABLE)
        if unknown:
            raise ValueError(f"param_grid keys must be 'C' and/or 'gamma', got {sorted(unknown)}")
        return dict(self.param_grid)

    def _base_params(self) -> dict[str, Any]:
        """The constructor's values of the searchable hyper-parameters (the grid overrides them)."""
        return {name: getattr(self, name) for name in _SEARCHABLE}

    def _search_key(self, name: str) -> str:
        """Pipeline parameter searched for grid key ``name`` ("C" or "gamma")."""
        return f"clf__{name}"

    def _search_values(self, name: str, values: list[Any], n_features: int) -> list[Any]:
        return list(values)

    # ------------------------------------------------------------ fit, step by step
    def fit(self, X: np.ndarray, y: np.ndarray) -> _SVMBase:
        """Standardise, tune on the training data (if a grid is set), fit on all training rows."""
        self._validate_params()
        X, y = validate_training_data(self, X, y)
        classes, yc = self._encode_labels(y)
        best = self._base_params()
        grid = self._grid()
        summary: list[dict[str, Any]] = []
        n_tuned = 0
        if grid:
            rows = self._tuning_rows(yc)
            found, summary = self._search(X[rows], yc[rows], grid, n_classes=classes.size)
            best.update(found)
            n_tuned = rows.size
        self.model_ = self._fit_final(X, yc, best)
        self.classes_ = classes
        self.best_params_ = best
        self.cv_results_ = summary
        self.n_samples_tuned_ = n_tuned
        self.variant_ = self.variant
        return self

    def _encode_labels(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sorted classes and integer codes; records the smallest class (for calibration folds)."""
        classes, yc = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise ValueError(f"the training labels have {classes.size} class; at least two classes are needed to fit")
        self._min_class_count = int(np.bincount(yc).min())
        self._coded_class_weight = self._code_class_weight(classes)
        return classes, yc

    def _code_class_weight(self, classes: np.ndarray) -> str | dict[int, float] | None:
        """``class_weight`` for the inner SVMs, which see integer codes: a dict keyed by label
        becomes one keyed by code ("balanced" and None pass unchanged)."""
        if not isinstance(self.class_weight, dict):
            return self.class_weight
        unknown = [k for k in self.class_weight if k not in set(classes.tolist())]
        if unknown:
            raise ValueError(f"class_weight names classes not in the training labels: {unknown}")
        return {code: self.class_weight[label] for code, label in enumerate(classes.tolist())
                if label in self.class_weight}

    def _tuning_rows(self, yc: np.ndarray) -> np.ndarray:
        """All training rows, or a stratified subsample of ``max_train_samples`` of them."""
        if self.max_train_samples is not None and self.max_train_samples < yc.shape[0]:
            # exact SVC costs ~n^2: tune on a stratified subsample, refit once on everything
            return _stratified_subsample(yc, int(self.max_train_samples), self.cv, self.random_state)
        return np.arange(yc.shape[0])

    def _search(self, Xs: np.ndarray, ys: np.ndarray, grid: dict[str, list[Any]], n_classes: int
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Stratified k-fold grid search on the given (training) rows: best values, per-candidate summary."""
        # a class with fewer rows than folds cannot be stratified; use fewer folds then
        n_splits = int(max(2, min(self.cv, np.bincount(ys).min())))
        search = GridSearchCV(
            # smallest possible training fold, so Nystroem never asks for more landmarks than rows
            self._pipeline(Xs.shape[0] - -(-Xs.shape[0] // n_splits) - n_classes, Xs.shape[1]),
            {self._search_key(k): self._search_values(k, v, Xs.shape[1]) for k, v in grid.items()},
            cv=StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.random_state),
            scoring=self.scoring,
            n_jobs=self.n_jobs,
            refit=False,
            error_score="raise",
        )
        search.fit(Xs, ys)
        res = search.cv_results_
        summary = [
            {
                "params": {k.split("__", 1)[1]: v for k, v in params.items()},
                "mean_test_score": float(res["mean_test_score"][i]),
                "std_test_score": float(res["std_test_score"][i]),
                "rank_test_score": int(res["rank_test_score"][i]),
            }
            for i, params in enumerate(res["params"])
        ]
        return {k.split("__", 1)[1]: v for k, v in search.best_params_.items()}, summary

    def _fit_final(self, X: np.ndarray, yc: np.ndarray, params: dict[str, Any]) -> Pipeline:
        """The model with the chosen hyper-parameters, fitted on every training row."""
        return self._pipeline(X.shape[0], X.shape[1], final=True, **params).fit(X, yc)

    # ------------------------------------------------------------ after fit
    def fit_report(self) -> dict[str, Any]:
        """What the last fit chose (the ``ReportsFit`` protocol): variant and hyper-parameters."""
        check_is_fitted(self, "model_")
        return {"variant": self.variant_, "best_params": _jsonable(self.best_params_)}

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class labels (the same type as the training labels)."""
        check_is_fitted(self, "model_")
        X = validate_features(self, X, reset=False)
        return self.classes_[self.model_.predict(X)]

    @available_if(_uncalibrated)
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Decision values as scikit-learn's classifiers give them (not probabilities); absent when
        ``probability=True`` (predictions are then the calibrated model's, not the margins').

        One column per class in the order of ``classes_`` (one-vs-rest shape); for two classes a
        single value per row, positive meaning ``classes_[1]``.
        """
        check_is_fitted(self, "model_")
        X = validate_features(self, X, reset=False)
        return self.model_.decision_function(X)


class RBFSVM(_SVMBase):
    """Standardised features + exact RBF ``sklearn.svm.SVC`` (libsvm, one-vs-one inside).

    Parameters
    ----------
    C, gamma : float, float or "scale"
        Used as given when ``param_grid`` is None, else the defaults the grid overrides.
    class_weight : None or "balanced"
    param_grid : "default", dict or None
        ``"default"`` = :data:`DEFAULT_RBF_GRID` (C in 1, 10, 100; gamma in scale, 0.01,
        0.001); a dict with keys "C"/"gamma"; None = no search.
    cv : int
        Stratified folds of the search (on the training data only).
    scoring : str
        sklearn scorer of the search.
    probability : bool
        Provide ``predict_proba`` via Platt scaling: ``CalibratedClassifierCV(SVC, cv=min(5,
        smallest class), ensemble=False)`` (sklearn 1.9's replacement for ``SVC(probability=True)``); slower.
    max_train_samples : int or None
        If set and smaller than the training set, the grid search runs on a stratified
        subsample of that size (every class keeps at least ``cv`` rows); the chosen parameters
        are then refitted on **all** training rows. Exact SVC cost grows ~n², so at 10^5 cells
        tune on ~10-20k.
    cache_size : float
        libsvm kernel cache in MB.
    n_jobs : int or None
        Parallel grid-search fits; None = scikit-learn's default (one, unless inside a joblib
        ``parallel_backend``). The runner passes the protocol's ``n_jobs`` here.
    random_state : int
    scaling : {"standard", "quantile"}
        How features are put on one scale before the kernel, fitted on the training rows:
        ``"standard"`` (default) mean 0 / sd 1; ``"quantile"`` each feature's training
        quantiles (at most 1000) mapped onto normal scores, then sd 1 (rank-based, so outliers
        and heavy tails do not dominate the RBF distances; slower).

    Attributes
    ----------
    classes_, best_params_, cv_results_ (list of dicts: params, mean/std/rank test score),
    n_samples_tuned_ (0 without a search), n_features_in_, model_ (the fitted Pipeline),
    variant_ = "svc-rbf". ``fit_report()`` gives ``{"variant", "best_params"}`` as JSON values.

    A scikit-learn classifier: ``score``, ``cross_val_score``, ``Pipeline`` and ``GridSearchCV``
    work with it (``check_estimator`` passes; see the plugin's ``tests/test_sklearn_compat.py``).
    """

    variant = "svc-rbf"
    default_grid = DEFAULT_RBF_GRID
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **_COMMON_CONSTRAINTS,
        "gamma": [StrOptions({"scale", "auto"}), Interval(Real, 0, None, closed="neither")],
        "probability": ["boolean"],
        "cache_size": [Interval(Real, 0, None, closed="neither")],
        "scaling": [StrOptions({"standard", "quantile"})],
    }

    def __init__(
        self,
        C: float = 1.0,
        gamma: float | str = "scale",
        class_weight: str | None = None,
        param_grid: dict[str, list[Any]] | str | None = "default",
        cv: int = 3,
        scoring: str = "accuracy",
        probability: bool = False,
        max_train_samples: int | None = None,
        cache_size: float = 500.0,
        n_jobs: int | None = None,
        random_state: int = 0,
        scaling: str = "standard",
    ) -> None:
        self.C = C
        self.gamma = gamma
        self.class_weight = class_weight
        self.param_grid = param_grid
        self.cv = cv
        self.scoring = scoring
        self.probability = probability
        self.max_train_samples = max_train_samples
        self.cache_size = cache_size
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.scaling = scaling

    def _pipeline(self, n_samples: int, n_features: int, final: bool = False, **overrides: Any) -> Pipeline:
        params = {**self._base_params(), **overrides}
        svc = SVC(kernel="rbf", C=params["C"], gamma=params["gamma"], class_weight=self._coded_class_weight,
                  cache_size=self.cache_size, random_state=self.random_state)
        if self.probability and final:
            # sklearn 1.9 deprecates SVC(probability=True); this is its stated replacement (Platt
            # scaling on internal CV folds, one SVC refitted on all rows). Not used in the search.
            # rare classes (2-4 cells) get fewer calibration folds instead of an error
            folds = int(min(5, self._min_class_count))
            if folds < 2:
                raise ValueError("probability=True needs at least 2 training examples of every class")
            svc = CalibratedClassifierCV(svc, method="sigmoid", cv=folds, ensemble=False)
        scale: Any = StandardScaler()
        if self.scaling == "quantile":
            # each feature through its training rows' empirical distribution onto normal scores
            # (rank-based: a heavy tail or an outlier no longer sets the RBF distances), then unit
            # variance, so gamma keeps its meaning; fitted on the rows passed to fit, like the scaler
            scale = Pipeline([
                ("rank", QuantileTransformer(n_quantiles=int(max(1, min(1000, n_samples))),
                                             output_distribution="normal", subsample=None)),
                ("std", StandardScaler()),
            ])
        return Pipeline([("scale", scale), ("clf", svc)])

    @available_if(lambda self: self.probability)
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (Platt scaling), columns as ``classes_``; only if ``probability=True``
        (otherwise the attribute does not exist, so ``hasattr(est, "predict_proba")`` is False)."""
        check_is_fitted(self, "model_")
        X = validate_features(self, X, reset=False)
        return self.model_.predict_proba(X)


class NystroemSVM(_SVMBase):
    """Standardised features + Nystroem RBF feature map + ``LinearSVC``: the RBF SVM at 10^5 cells.

    Cost is linear in the number of cells (the exact SVC is ~quadratic). Accuracy approaches the
    exact RBF SVM as ``n_components`` grows.

    Parameters
    ----------
    n_components : int
        Landmarks of the Nystroem map (clamped to the number of training rows).
    gamma : float or "scale"
        RBF width; "scale" = 1 / n_features, which equals sklearn's SVC "scale" on standardised
        features (variance 1).
    C : float
    class_weight : None or "balanced"
    param_grid : None, "default" or dict
        Optional search over "C" (and "gamma"); "default" = {"C": [0.1, 1, 10]}.
    cv, scoring, max_train_samples, n_jobs, random_state : as in :class:`RBFSVM`
    max_iter : int
        LinearSVC iterations.
    dual : bool or "auto"
        LinearSVC formulation; False (primal) suits n_samples >> n_components, the paper-scale
        case.

    Attributes
    ----------
    As :class:`RBFSVM`; ``variant_ = "nystroem-linear-svm"``. No ``predict_proba``.
    """

    variant = "nystroem-linear-svm"
    default_grid = DEFAULT_NYSTROEM_GRID
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **_COMMON_CONSTRAINTS,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "gamma": [StrOptions({"scale"}), Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "dual": ["boolean", StrOptions({"auto"})],
    }

    def __init__(
        self,
        n_components: int = 1000,
        gamma: float | str = "scale",
        C: float = 1.0,
        class_weight: str | None = None,
        param_grid: dict[str, list[Any]] | str | None = None,
        cv: int = 3,
        scoring: str = "accuracy",
        max_train_samples: int | None = None,
        max_iter: int = 5000,
        dual: bool | str = False,
        n_jobs: int | None = None,
        random_state: int = 0,
    ) -> None:
        self.n_components = n_components
        self.gamma = gamma
        self.C = C
        self.class_weight = class_weight
        self.param_grid = param_grid
        self.cv = cv
        self.scoring = scoring
        self.max_train_samples = max_train_samples
        self.max_iter = max_iter
        self.dual = dual
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _pipeline(self, n_samples: int, n_features: int, final: bool = False, **overrides: Any) -> Pipeline:
        params = {**self._base_params(), **overrides}
        gamma = params["gamma"]
        if gamma == "scale":
            gamma = 1.0 / max(n_features, 1)
        m = int(max(1, min(self.n_components, n_samples)))
        return Pipeline([
            ("scale", StandardScaler()),
            ("map", Nystroem(kernel="rbf", gamma=gamma, n_components=m, random_state=self.random_state)),
            ("clf", LinearSVC(C=params["C"], class_weight=self._coded_class_weight, dual=self.dual,
                              max_iter=self.max_iter, random_state=self.random_state)),
        ])

    def _search_key(self, name: str) -> str:
        # gamma belongs to the Nystroem map, C to the linear SVM
        return "map__gamma" if name == "gamma" else f"clf__{name}"

    def _search_values(self, name: str, values: list[Any], n_features: int) -> list[Any]:
        if name == "gamma":
            return [1.0 / max(n_features, 1) if v == "scale" else v for v in values]
        return list(values)

    def fit(self, X: np.ndarray, y: np.ndarray) -> NystroemSVM:
        super().fit(X, y)
        self.n_components_ = self.model_.named_steps["map"].n_components
        # scikit-learn's convention for estimators with max_iter: the iterations the final fit used
        self.n_iter_ = int(self.model_.named_steps["clf"].n_iter_)
        return self

