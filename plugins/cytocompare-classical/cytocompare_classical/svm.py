"""SVM classifiers of the classical arm: exact RBF SVC, and Nystroem + linear SVM for paper scale.

Both standardise the features (fitted on the training rows), accept string labels and expose
``classes_`` sorted. Hyper-parameters are chosen by stratified k-fold CV on the *training* data
passed to ``fit`` only; the test rows never reach the search.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.kernel_approximation import Nystroem
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from cytocompare.base import BaseComponent, check_is_fitted

from cytocompare_classical._validation import check_X

__all__ = ["RBFSVM", "NystroemSVM", "DEFAULT_RBF_GRID"]

#: the default search of RBFSVM (``param_grid="default"``); gamma acts on standardised features
DEFAULT_RBF_GRID: dict[str, list[Any]] = {"C": [1, 10, 100], "gamma": ["scale", 0.01, 0.001]}
#: the default search of NystroemSVM (``param_grid="default"``): C of the linear SVM only
DEFAULT_NYSTROEM_GRID: dict[str, list[Any]] = {"C": [0.1, 1, 10]}


def _check_X(X: Any, n_features: int | None = None) -> np.ndarray:
    return check_X(X, n_features, fitted="the classifier")


def _stratified_subsample(y: np.ndarray, n: int, min_per_class: int, seed: int) -> np.ndarray:
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


class _SVMBase(BaseComponent):
    """Shared fit logic: label coding, optional subsampled grid search, final fit on all rows."""

    input = "features"
    variant: str = ""

    # subclasses set these
    def _pipeline(self, n_samples: int, n_features: int, final: bool = False,
                  **overrides: Any) -> Pipeline:  # pragma: no cover
        raise NotImplementedError

    def _grid(self) -> dict[str, list[Any]] | None:  # pragma: no cover
        raise NotImplementedError

    def _base_params(self) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def _search_key(self, name: str) -> str:
        """Pipeline parameter searched for grid key ``name`` ("C" or "gamma")."""
        return f"clf__{name}"

    def _search_values(self, name: str, values: list[Any], n_features: int) -> list[Any]:
        return list(values)

    def fit(self, X: np.ndarray, y: np.ndarray) -> _SVMBase:
        """Standardise, tune on the training data (if a grid is set), fit on all training rows."""
        X = _check_X(X)
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must be 1-D with {X.shape[0]} labels, got shape {y.shape}")
        classes, yc = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise ValueError(f"need at least two classes to fit, got {classes.size}")
        if self.cv < 2:
            raise ValueError(f"cv must be >= 2, got {self.cv}")
        self._min_class_count = int(np.bincount(yc).min())
        grid = self._grid()
        best = self._base_params()
        summary: list[dict[str, Any]] = []
        n_tuned = 0
        if grid:
            rows = np.arange(X.shape[0])
            if self.max_train_samples is not None and self.max_train_samples < X.shape[0]:
                # exact SVC costs ~n^2: tune on a stratified subsample, refit once on everything
                rows = _stratified_subsample(yc, int(self.max_train_samples), self.cv, self.random_state)
            Xs, ys = X[rows], yc[rows]
            n_tuned = rows.size
            # a class with fewer rows than folds cannot be stratified; use fewer folds then
            n_splits = int(max(2, min(self.cv, np.bincount(ys).min())))
            search = GridSearchCV(
                # smallest possible training fold, so Nystroem never asks for more landmarks than rows
                self._pipeline(Xs.shape[0] - -(-Xs.shape[0] // n_splits) - classes.size, X.shape[1]),
                {self._search_key(k): self._search_values(k, v, X.shape[1]) for k, v in grid.items()},
                cv=StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.random_state),
                scoring=self.scoring,
                n_jobs=self.n_jobs,
                refit=False,
                error_score="raise",
            )
            search.fit(Xs, ys)
            res = search.cv_results_
            for i, params in enumerate(res["params"]):
                summary.append({
                    "params": {k.split("__", 1)[1]: v for k, v in params.items()},
                    "mean_test_score": float(res["mean_test_score"][i]),
                    "std_test_score": float(res["std_test_score"][i]),
                    "rank_test_score": int(res["rank_test_score"][i]),
                })
            best.update({k.split("__", 1)[1]: v for k, v in search.best_params_.items()})
        model = self._pipeline(X.shape[0], X.shape[1], final=True, **best)
        model.fit(X, yc)
        self.classes_ = classes
        self.model_ = model
        self.best_params_ = best
        self.cv_results_ = summary
        self.n_samples_tuned_ = n_tuned
        self.n_features_in_ = X.shape[1]
        self.variant_ = self.variant
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class labels (the same type as the training labels)."""
        check_is_fitted(self, "model_")
        X = _check_X(X, self.n_features_in_)
        return self.classes_[self.model_.predict(X)]

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """One-vs-rest decision values, columns in the order of ``classes_`` (not probabilities)."""
        check_is_fitted(self, "model_")
        X = _check_X(X, self.n_features_in_)
        d = self.model_.decision_function(X)
        # binary problems give one column (positive = classes_[1]); make it (n, 2) like OvR
        return np.column_stack([-d, d]) if d.ndim == 1 else d


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
        Parallel grid-search fits.
    random_state : int

    Attributes
    ----------
    classes_, best_params_, cv_results_ (list of dicts: params, mean/std/rank test score),
    n_samples_tuned_ (0 without a search), n_features_in_, model_ (the fitted Pipeline),
    variant_ = "svc-rbf".
    """

    variant = "svc-rbf"
    tags = {"deterministic": True}

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

    def _grid(self) -> dict[str, list[Any]] | None:
        if self.param_grid is None:
            return None
        if isinstance(self.param_grid, str):
            if self.param_grid != "default":
                raise ValueError(f"param_grid must be 'default', a dict or None, got {self.param_grid!r}")
            return DEFAULT_RBF_GRID
        unknown = set(self.param_grid) - {"C", "gamma"}
        if unknown:
            raise ValueError(f"param_grid keys must be 'C' and/or 'gamma', got {sorted(unknown)}")
        return dict(self.param_grid)

    def _base_params(self) -> dict[str, Any]:
        return {"C": self.C, "gamma": self.gamma}

    def _pipeline(self, n_samples: int, n_features: int, final: bool = False, **overrides: Any) -> Pipeline:
        params = {**self._base_params(), **overrides}
        svc = SVC(kernel="rbf", C=params["C"], gamma=params["gamma"], class_weight=self.class_weight,
                  cache_size=self.cache_size, random_state=self.random_state)
        if self.probability and final:
            # sklearn 1.9 deprecates SVC(probability=True); this is its stated replacement (Platt
            # scaling on internal CV folds, one SVC refitted on all rows). Not used in the search.
            # rare classes (2-4 cells) get fewer calibration folds instead of an error
            folds = int(min(5, self._min_class_count))
            if folds < 2:
                raise ValueError("probability=True needs at least 2 training examples of every class")
            svc = CalibratedClassifierCV(svc, method="sigmoid", cv=folds, ensemble=False)
        return Pipeline([("scale", StandardScaler()), ("clf", svc)])

    @property
    def predict_proba(self):  # noqa: D401 - property so hasattr() is False without probability
        """Class probabilities (Platt scaling), columns as ``classes_``; only if ``probability=True``."""
        if not self.probability:
            raise AttributeError("predict_proba is available only with probability=True")
        return self._predict_proba

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = _check_X(X, self.n_features_in_)
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
    tags = {"deterministic": True}

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

    def _grid(self) -> dict[str, list[Any]] | None:
        if self.param_grid is None:
            return None
        if isinstance(self.param_grid, str):
            if self.param_grid != "default":
                raise ValueError(f"param_grid must be 'default', a dict or None, got {self.param_grid!r}")
            return DEFAULT_NYSTROEM_GRID
        unknown = set(self.param_grid) - {"C", "gamma"}
        if unknown:
            raise ValueError(f"param_grid keys must be 'C' and/or 'gamma', got {sorted(unknown)}")
        return dict(self.param_grid)

    def _base_params(self) -> dict[str, Any]:
        return {"C": self.C, "gamma": self.gamma}

    def _pipeline(self, n_samples: int, n_features: int, final: bool = False, **overrides: Any) -> Pipeline:
        params = {**self._base_params(), **overrides}
        gamma = params["gamma"]
        if gamma == "scale":
            gamma = 1.0 / max(n_features, 1)
        m = int(max(1, min(self.n_components, n_samples)))
        return Pipeline([
            ("scale", StandardScaler()),
            ("map", Nystroem(kernel="rbf", gamma=gamma, n_components=m, random_state=self.random_state)),
            ("clf", LinearSVC(C=params["C"], class_weight=self.class_weight, dual=self.dual,
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
        return self

