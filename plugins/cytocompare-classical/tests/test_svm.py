"""RBFSVM / NystroemSVM: learning, labels, class weights, training-only search, conventions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.preprocessing import StandardScaler

from cytocompare.base import clone
from cytocompare.errors import NotFittedError
from cytocompare_classical.svm import NystroemSVM, RBFSVM


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(n_samples=300, centers=3, n_features=5, cluster_std=1.0, random_state=0)
    return X, np.array(["LYT", "MON", "NGS"])[y]


@pytest.mark.parametrize("est", [RBFSVM(param_grid=None), RBFSVM(), NystroemSVM(n_components=50),
                                 NystroemSVM(n_components=50, param_grid="default")])
def test_learns_separable_problem_with_string_labels(est, blobs) -> None:
    X, y = blobs
    assert est.fit(X[:200], y[:200]) is est
    pred = est.predict(X[200:])
    assert pred.dtype.kind == "U" and (pred == y[200:]).mean() > 0.9
    assert est.classes_.tolist() == ["LYT", "MON", "NGS"]
    assert est.decision_function(X[200:]).shape == (100, 3)
    assert est.variant_ in ("svc-rbf", "nystroem-linear-svm")


def test_class_weight_balanced(blobs) -> None:
    X, y = blobs
    keep = np.r_[np.flatnonzero(y != "NGS"), np.flatnonzero(y == "NGS")[:12]]
    est = RBFSVM(param_grid=None, class_weight="balanced").fit(X[keep], y[keep])
    assert (est.predict(X[y == "NGS"]) == "NGS").mean() > 0.9
    nys = NystroemSVM(n_components=30, class_weight="balanced").fit(X[keep], y[keep])
    assert (nys.predict(X[y == "NGS"]) == "NGS").mean() > 0.9


def test_grid_search_cross_validates_the_fit_rows_then_refits_once_on_all(blobs, monkeypatch) -> None:
    """The search's folds partition the rows given to fit (each candidate trains on the same
    k-1 folds and is scored on the one left out); the chosen parameters are refitted once, on
    every row. (That only training rows reach the search is the caller's side: fit sees no others.)"""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    X, y = blobs
    seen: list[int] = []
    scaled_rows: list[frozenset[int]] = []
    real_fit, real_scaler_fit = SVC.fit, StandardScaler.fit
    row_of = {row.tobytes(): i for i, row in enumerate(X[:150])}

    def recording_fit(self, Xf, yf, sample_weight=None):
        seen.append(len(Xf))
        return real_fit(self, Xf, yf, sample_weight=sample_weight)

    def recording_scaler_fit(self, Xf, yf=None, sample_weight=None):
        scaled_rows.append(frozenset(row_of[np.asarray(r, dtype=X.dtype).tobytes()] for r in Xf))
        return real_scaler_fit(self, Xf, yf, sample_weight=sample_weight)

    monkeypatch.setattr(SVC, "fit", recording_fit)
    monkeypatch.setattr(StandardScaler, "fit", recording_scaler_fit)
    est = RBFSVM(param_grid={"C": [1, 10], "gamma": ["scale", 0.1]}, cv=3).fit(X[:150], y[:150])
    assert max(seen) == 150 and len(seen) == 4 * 3 + 1  # 4 candidates × 3 folds + final refit
    assert all(s <= 100 for s in seen[:-1])
    everything = frozenset(range(150))
    assert scaled_rows[-1] == everything  # the final model: every row, once
    train_sets = set(scaled_rows[:-1])
    assert len(train_sets) == 3 and all(scaled_rows[:-1].count(t) == 4 for t in train_sets)
    held_out = [everything - t for t in train_sets]
    assert sum(len(h) for h in held_out) == 150 and frozenset().union(*held_out) == everything
    assert len(est.cv_results_) == 4 and est.n_samples_tuned_ == 150
    assert set(est.best_params_) == {"C", "gamma"}


def test_max_train_samples_tunes_on_subsample_then_refits_all(blobs) -> None:
    X, y = blobs
    est = RBFSVM(max_train_samples=90).fit(X, y)
    assert 90 <= est.n_samples_tuned_ <= 95
    assert est.model_.named_steps["clf"].shape_fit_[0] == 300


def test_predict_proba_only_with_probability(blobs) -> None:
    X, y = blobs
    assert not hasattr(RBFSVM(param_grid=None).fit(X, y), "predict_proba")
    est = RBFSVM(param_grid=None, probability=True).fit(X[:200], y[:200])
    proba = est.predict_proba(X[200:])
    assert proba.shape == (100, 3) and np.allclose(proba.sum(1), 1)
    assert (est.classes_[proba.argmax(1)] == y[200:]).mean() > 0.9


@pytest.mark.parametrize("cls", [RBFSVM, NystroemSVM])
def test_conventions_and_bad_input(cls, blobs) -> None:
    X, y = blobs
    est = cls()
    with pytest.raises(NotFittedError):
        est.predict(X)
    c = clone(est)
    assert c.get_params() == est.get_params()
    bad = X.copy()
    bad[0, 0] = np.nan
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="2 non-finite"):
        cls(param_grid=None).fit(bad, y)
    fitted = cls(param_grid=None).fit(X, y)
    with pytest.raises(ValueError, match="non-finite"):
        fitted.predict(bad)
    with pytest.raises(ValueError, match="features"):
        fitted.predict(X[:, :2])


# ------------------------------------------------------------------ scaling="quantile"

def test_quantile_scaling_ignores_monotone_transforms_of_the_training_rows(blobs) -> None:
    """Rank-based: a strictly increasing map of any feature (here exp and cube) leaves the
    scaled training rows, hence the model and its decisions on them, unchanged."""
    X, y = blobs
    warped = X.copy()
    warped[:, 0] = np.exp(X[:, 0])
    warped[:, 1] = X[:, 1] ** 3
    a = RBFSVM(param_grid=None, scaling="quantile").fit(X, y)
    b = RBFSVM(param_grid=None, scaling="quantile").fit(warped, y)
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(warped), atol=1e-9)
    # the standardising default is not invariant: a heavy tail changes the distances
    s_a = RBFSVM(param_grid=None).fit(X, y).decision_function(X)
    s_b = RBFSVM(param_grid=None).fit(warped, y).decision_function(warped)
    assert not np.allclose(s_a, s_b, atol=1e-3)


def test_quantile_scaling_is_fitted_on_the_training_rows(blobs) -> None:
    X, y = blobs
    est = RBFSVM(param_grid=None, scaling="quantile").fit(X[:200], y[:200])
    rank = est.model_.named_steps["scale"].named_steps["rank"]
    assert rank.n_quantiles_ == 200
    np.testing.assert_array_equal(rank.quantiles_[[0, -1]], np.stack([X[:200].min(0), X[:200].max(0)]))
    assert (est.predict(X[200:]) == y[200:]).mean() > 0.9
    # the grid search's pipelines are built for their (smaller) training folds
    searched = RBFSVM(scaling="quantile").fit(X[:200], y[:200])
    assert searched.model_.named_steps["scale"].named_steps["rank"].n_quantiles_ == 200
    assert isinstance(RBFSVM().fit(X, y).model_.named_steps["scale"], StandardScaler)


def test_unknown_scaling_is_refused(blobs) -> None:
    X, y = blobs
    with pytest.raises(ValueError, match="scaling"):
        RBFSVM(scaling="rank").fit(X, y)
