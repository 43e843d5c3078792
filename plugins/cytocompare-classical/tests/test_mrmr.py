"""mRMR: MI estimator, pymrmr equivalence, leakage guard, component conventions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from cytocompare.base import clone
from cytocompare.errors import NotFittedError
from cytocompare_classical.discretize import apply_thresholds, fit_thresholds
from cytocompare_classical.mrmr import MRMRSelector, mrmr_select, mutual_information


def _pymrmr_available() -> bool:
    try:
        from cytocompare_classical.mrmr import _import_pymrmr
        _import_pymrmr()
        return True
    except ImportError:
        return False


needs_pymrmr = pytest.mark.skipif(not _pymrmr_available(), reason="pymrmr (optional, academic licence) not installed")


def _tricky(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Random discrete data with exact ties: duplicate, state-reversed, constant, gapped and
    shifted columns, 2-7 states, int or str labels."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 150))
    p = int(rng.integers(6, 60))
    k = int(rng.integers(1, min(p, 15) + 1))
    s = [3, 3, 2, 5, 7][seed % 5]
    Xd = rng.integers(0, s, (n, p))
    Xd[:, 1] = Xd[:, 0]
    Xd[:, 2] = 1
    Xd[:, 3] = s - 1 - Xd[:, 0]
    Xd[:, 4] = np.where(Xd[:, 5] > 0, s - 1, 0)
    if s < 7:
        Xd[:, 5] += 1
    y = rng.integers(0, int(rng.integers(2, 8)), n)
    if seed % 3 == 0:
        y = np.array([f"c{v}" for v in y])
    return Xd, y, k


@needs_pymrmr
@pytest.mark.parametrize("method", ["MIQ", "MID"])
def test_same_picks_as_pymrmr(method: str) -> None:
    from cytocompare_classical.mrmr import pymrmr_select
    for seed in range(15):
        Xd, y, k = _tricky(seed)
        assert mrmr_select(Xd, y, k, method) == pymrmr_select(Xd, y, k, method), (seed, method)


@needs_pymrmr
def test_same_picks_as_pymrmr_on_discretised_continuous_data() -> None:
    from cytocompare_classical.mrmr import pymrmr_select
    rng = np.random.default_rng(7)
    X = rng.normal(size=(200, 50))
    y = rng.integers(0, 5, 200)
    X[:, :10] += y[:, None] * 0.4
    X[:, 10:20] = X[:, :10] + rng.normal(scale=0.3, size=(200, 10))  # redundant copies
    for disc, kw in [("sigma", {"sigma_k": 1.0}), ("sigma", {"sigma_k": 0.5}), ("quantile", {"n_bins": 5})]:
        Xd = apply_thresholds(X, fit_thresholds(X, disc, **kw), disc)
        for method in ("MIQ", "MID"):
            assert mrmr_select(Xd, y, 15, method) == pymrmr_select(Xd, y, 15, method)
    sel = MRMRSelector(k=8, backend="pymrmr").fit(X, y)
    assert list(sel.selected_) == list(MRMRSelector(k=8).fit(X, y).selected_)


def test_mi_equals_sklearn_in_bits() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 500))
        a = rng.integers(0, int(rng.integers(1, 6)), n)
        b = rng.integers(0, int(rng.integers(1, 9)), n) + int(rng.integers(0, 3))
        assert mutual_information(a, b) == pytest.approx(mutual_info_score(a, b) / np.log(2), abs=1e-12)
    a = rng.integers(0, 3, 100)
    assert mutual_information(a, a) == pytest.approx(mutual_info_score(a, a) / np.log(2))


def test_first_pick_is_max_relevance_and_redundant_copy_is_skipped() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, 400)
    b = rng.integers(0, 2, 400)
    y = 2 * a + b
    noise = rng.integers(0, 3, 400)
    Xd = np.column_stack([noise, a, a, b])  # column 2 duplicates column 1
    for method in ("MID", "MIQ"):
        picks = mrmr_select(Xd, y, 2, method)
        rel = [mutual_information(y, Xd[:, j]) for j in range(4)]
        assert picks[0] == int(np.argmax(rel))
        assert 3 in picks and not {1, 2} <= set(picks)


def test_thresholds_fitted_on_training_rows_only() -> None:
    rng = np.random.default_rng(2)
    Xtr = rng.normal(size=(200, 8))
    ytr = rng.integers(0, 3, 200)
    Xte = rng.normal(loc=5.0, scale=3.0, size=(50, 8))  # shifted test rows must not move thresholds
    sel = MRMRSelector(k=3).fit(Xtr, ytr)
    mean, sd = Xtr.mean(0), Xtr.std(0, ddof=1)
    np.testing.assert_allclose(sel.thresholds_, np.stack([mean - sd, mean + sd], 1))
    codes = sel.discretize(Xte)
    np.testing.assert_array_equal(codes, apply_thresholds(Xte, sel.thresholds_, "sigma"))
    assert not np.array_equal(codes, apply_thresholds(Xte, fit_thresholds(Xte), "sigma"))
    q = MRMRSelector(k=3, discretization="quantile", n_bins=4).fit(Xtr, ytr)
    assert q.thresholds_.shape == (8, 3)
    assert set(np.unique(q.discretize(Xtr))) <= {0, 1, 2, 3}


def test_sigma_rule_matches_peng() -> None:
    th = np.array([[-1.0, 1.0]])
    x = np.array([[-2.0], [-1.0], [0.0], [1.0], [1.5]])
    assert apply_thresholds(x, th, "sigma").ravel().tolist() == [0, 1, 1, 1, 2]


def test_selector_conventions() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 30))
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, 120)]
    X[:, 5] += (y == "a") * 2.0
    X[:, 7] = 3.0  # constant feature
    sel = MRMRSelector(k=4, method="MID")
    with pytest.raises(NotFittedError):
        sel.transform(X)
    assert sel.fit(X, y) is sel
    assert sel.selected_[0] == 5 and len(sel.selected_) == 4
    np.testing.assert_array_equal(sel.transform(X), X[:, sel.selected_])
    assert sel.get_support().sum() == 4 and sel.get_support(indices=True).tolist() == sel.selected_.tolist()
    assert sel.relevance_.shape == (30,) and sel.relevance_[7] == pytest.approx(0.0, abs=1e-12)
    assert sel.n_features_in_ == 30
    c = clone(sel)
    assert c.get_params() == sel.get_params() and not hasattr(c, "selected_")
    assert list(c.fit(X, y).selected_) == list(sel.selected_)


def test_k_larger_than_features_is_clamped_with_warning() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(50, 6))
    y = rng.integers(0, 2, 50)
    with pytest.warns(UserWarning, match="exceeds"):
        sel = MRMRSelector(k=10).fit(X, y)
    assert len(sel.selected_) == 6 and sorted(sel.selected_) == list(range(6)) and sel.warnings_


def test_bad_input_and_params() -> None:
    X = np.ones((10, 3))
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        MRMRSelector(k=2).fit(X, np.arange(10) % 2)
    with pytest.raises(ValueError, match="method"):
        MRMRSelector(method="FCQ").fit(np.ones((10, 3)), np.arange(10) % 2)
    with pytest.raises(ValueError, match="backend"):
        MRMRSelector(backend="x").fit(np.ones((10, 3)), np.arange(10) % 2)


def test_missing_pymrmr_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins
    import sys

    from cytocompare_classical import mrmr as m
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "pymrmr":
            raise ModuleNotFoundError("No module named 'pymrmr'", name="pymrmr")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "pymrmr", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install --no-build-isolation pymrmr"):
        m._import_pymrmr()
