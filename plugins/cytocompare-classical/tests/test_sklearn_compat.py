"""The SVMs and the mRMR selector are scikit-learn estimators: scikit-learn's own common checks,
cross-validation, its Pipeline and GridSearchCV, tags, clone and parameter validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sklearn.base
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags as sklearn_tags
from sklearn.utils.estimator_checks import parametrize_with_checks

from cytocompare.base import clone
from cytocompare.errors import NotFittedError
from cytocompare_classical import svm as svm_module
from cytocompare_classical.mrmr import MRMRSelector
from cytocompare_classical.svm import NystroemSVM, RBFSVM


def expected_failed_checks(estimator) -> dict[str, str]:
    """Known, explained departures from scikit-learn's checks (none for the default settings)."""
    if isinstance(estimator, RBFSVM) and estimator.probability:
        return {
            "check_class_weight_classifiers": (
                "probability=True predicts through Platt calibration (CalibratedClassifierCV), fitted "
                "without class weights, so an extreme class_weight no longer decides every prediction"
            ),
        }
    return {}


_K_CLAMPED = pytest.mark.filterwarnings("ignore:k=.* exceeds:UserWarning")  # k=50 on 2-10 columns


# about 5 s of work in all: the settings the runner's fast parameters and the defaults of the cheap ones use
@parametrize_with_checks(
    [RBFSVM(param_grid=None), RBFSVM(param_grid=None, scaling="quantile"), NystroemSVM(n_components=50), NystroemSVM(n_components=20, param_grid="default"),
     MRMRSelector(), MRMRSelector(k=2, method="MID", discretization="quantile", n_bins=4),
     MRMRSelector(k=2, drop_uninformative=True, max_correlation=0.999)],
    expected_failed_checks=expected_failed_checks,
)
@_K_CLAMPED
def test_sklearn_common_checks(estimator, check) -> None:
    check(estimator)


# the default grid search (9 candidates x 3 folds in every check) and Platt scaling: ~30 s together
@pytest.mark.slow
@parametrize_with_checks([RBFSVM(), RBFSVM(probability=True, param_grid=None)],
                         expected_failed_checks=expected_failed_checks)
def test_sklearn_common_checks_slow_settings(estimator, check) -> None:
    check(estimator)


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(n_samples=240, centers=3, n_features=6, cluster_std=1.5, random_state=1)
    return X, np.array(["LYT", "MON", "NGS"])[y]


def test_cross_val_score_and_score(blobs) -> None:
    X, y = blobs
    scores = cross_val_score(RBFSVM(), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.9
    est = RBFSVM(param_grid=None).fit(X, y)
    assert est.score(X, y) == pytest.approx(np.mean(est.predict(X) == y))


def test_in_a_users_pipeline_and_grid_search(blobs) -> None:
    X, y = blobs
    rng = np.random.default_rng(0)
    X = np.hstack([X, rng.normal(size=(X.shape[0], 10))])  # 10 noise columns for mRMR to drop
    pipe = Pipeline([("select", MRMRSelector(k=3)), ("svm", RBFSVM(param_grid=None))])
    search = GridSearchCV(pipe, {"select__k": [2, 4], "svm__C": [1.0, 10.0], "svm__gamma": ["scale", 0.1]}, cv=3)
    search.fit(X, y)
    assert set(search.best_params_) == {"select__k", "svm__C", "svm__gamma"}
    # the refitted best pipeline equals a hand-built one with those parameters
    by_hand = clone(pipe).set_params(**search.best_params_).fit(X, y)
    np.testing.assert_array_equal(search.predict(X), by_hand.predict(X))
    assert search.score(X, y) > 0.9
    nys = GridSearchCV(NystroemSVM(n_components=30), {"C": [0.1, 1.0]}, cv=3).fit(X, y)
    assert nys.best_estimator_.classes_.tolist() == ["LYT", "MON", "NGS"]


def test_tags_translate_to_sklearn() -> None:
    for est in (RBFSVM(), NystroemSVM(), MRMRSelector()):
        assert sklearn_tags(est).non_deterministic is False  # from Tags(deterministic=True)
    assert sklearn.base.is_classifier(RBFSVM()) and sklearn.base.is_classifier(NystroemSVM())
    assert not sklearn.base.is_classifier(MRMRSelector())
    assert sklearn_tags(MRMRSelector()).target_tags.required  # supervised selection needs y


def test_clone_is_sklearns(blobs) -> None:
    X, y = blobs
    est = RBFSVM(C=3.0, param_grid=None).fit(X, y)
    for copy in (clone(est), sklearn.base.clone(est)):
        assert copy.get_params() == est.get_params() and not hasattr(copy, "model_")


def test_not_fitted_error_is_both_kinds(blobs) -> None:
    X, _ = blobs
    for est in (RBFSVM(), NystroemSVM(), MRMRSelector()):
        method = est.transform if isinstance(est, MRMRSelector) else est.predict
        with pytest.raises(NotFittedError) as info:
            method(X)
        assert isinstance(info.value, SklearnNotFittedError) and isinstance(info.value, AttributeError)


def test_parameters_are_validated_at_fit(blobs) -> None:
    X, y = blobs
    with pytest.raises(ValueError, match="'C' parameter of RBFSVM"):
        RBFSVM(C=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="'cv' parameter of NystroemSVM"):
        NystroemSVM(cv=1).fit(X, y)
    with pytest.raises(ValueError, match="'pool_size' parameter of MRMRSelector"):
        MRMRSelector(pool_size=0).fit(X, y)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        MRMRSelector(k=True).fit(X, y)


def test_fit_report_says_what_the_fit_chose(blobs) -> None:
    X, y = blobs
    with pytest.raises(NotFittedError):
        RBFSVM().fit_report()
    report = RBFSVM(param_grid={"C": [1, 10], "gamma": [np.float64(0.1)]}).fit(X, y).fit_report()
    assert report["variant"] == "svc-rbf" and set(report["best_params"]) == {"C", "gamma"}
    assert json.loads(json.dumps(report)) == report  # JSON values only (no numpy scalars)
    assert type(report["best_params"]["gamma"]) is float
    assert NystroemSVM(n_components=20).fit(X, y).fit_report() == {
        "variant": "nystroem-linear-svm", "best_params": {"C": 1.0, "gamma": "scale"}}


def test_n_jobs_reaches_the_grid_search(blobs, monkeypatch) -> None:
    X, y = blobs
    seen: list[int | None] = []

    class RecordingSearch(GridSearchCV):
        def fit(self, *args, **kwargs):
            seen.append(self.n_jobs)
            return super().fit(*args, **kwargs)

    monkeypatch.setattr(svm_module, "GridSearchCV", RecordingSearch)
    RBFSVM(param_grid={"C": [1, 10]}, n_jobs=2).fit(X, y)
    RBFSVM(param_grid={"C": [1, 10]}).fit(X, y)
    assert seen == [2, None]


def test_class_weight_by_label(blobs) -> None:
    """The inner SVMs see integer codes: a class_weight dict keyed by label must reach the right class."""
    X, y = blobs
    keep = np.r_[np.flatnonzero(y != "NGS"), np.flatnonzero(y == "NGS")[:6]]
    for cls in (RBFSVM, NystroemSVM):
        kw = {"param_grid": None} if cls is RBFSVM else {"n_components": 30}
        heavy = cls(class_weight={"NGS": 1000.0}, **kw).fit(X[keep], y[keep])
        light = cls(class_weight={"NGS": 0.001}, **kw).fit(X[keep], y[keep])
        assert (heavy.predict(X) == "NGS").sum() > (light.predict(X) == "NGS").sum()
    with pytest.raises(ValueError, match="not in the training labels"):
        RBFSVM(param_grid=None, class_weight={"XYZ": 2.0}).fit(X, y)
