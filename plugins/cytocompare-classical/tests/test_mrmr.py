"""mRMR: MI estimator, pick-for-pick equality with a plain reference implementation of Peng's
algorithm (tests/mrmr_reference.py) and with pymrmr, leakage guard, component conventions."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from mrmr_reference import peng_mrmr
from sklearn.metrics import mutual_info_score

from cytocompare.base import clone
from cytocompare.errors import NotFittedError
from cytocompare_classical.discretize import apply_thresholds, fit_thresholds
from cytocompare_classical.mrmr import MRMRSelector, mrmr_select, mutual_information


#: CI sets this: pymrmr was installed on purpose, so its absence is a failure, not a skip
REQUIRE_PYMRMR = os.environ.get("CYTOCOMPARE_REQUIRE_PYMRMR") == "1"


def _load_pymrmr(require: bool):
    """pymrmr's selection function; skips where pymrmr is absent, fails if ``require``."""
    from cytocompare_classical import mrmr
    try:
        mrmr._import_pymrmr()
    except ImportError as exc:
        if require:
            pytest.fail(f"CYTOCOMPARE_REQUIRE_PYMRMR=1 but pymrmr cannot be imported: {exc}")
        pytest.skip("pymrmr (optional, academic licence) not installed")
    return mrmr.pymrmr_select


@pytest.fixture
def pymrmr_select():
    return _load_pymrmr(REQUIRE_PYMRMR)


def test_absent_pymrmr_skips_unless_required(monkeypatch: pytest.MonkeyPatch) -> None:
    from cytocompare_classical import mrmr

    def absent():
        raise ImportError(mrmr.PYMRMR_INSTALL_HINT)

    monkeypatch.setattr(mrmr, "_import_pymrmr", absent)
    with pytest.raises(pytest.skip.Exception):
        _load_pymrmr(require=False)
    with pytest.raises(pytest.fail.Exception, match="CYTOCOMPARE_REQUIRE_PYMRMR=1"):
        _load_pymrmr(require=True)


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


@pytest.mark.parametrize("method", ["MIQ", "MID"])
def test_same_picks_as_pymrmr(method: str, pymrmr_select) -> None:
    for seed in range(15):
        Xd, y, k = _tricky(seed)
        assert mrmr_select(Xd, y, k, method) == pymrmr_select(Xd, y, k, method), (seed, method)


def test_same_picks_as_pymrmr_on_discretised_continuous_data(pymrmr_select) -> None:
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


# ---------------------------------------------------------------- against the plain reference
def _assert_same_clear_picks(Xd, y, k, method, pool_size=5000) -> int:
    """Fast picks equal the reference's in every round whose winner is clear; returns that count."""
    ref = peng_mrmr(Xd, y, k, method, pool_size)
    fast = mrmr_select(Xd, y, k, method, pool_size)
    n = ref.clear_rounds
    assert fast[:n] == ref.picks[:n], (method, fast, ref.picks, n)
    assert len(fast) == len(ref.picks)
    return n


def _random_discrete(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Random discrete data (2-5 states, 2-6 classes), some columns informative, some redundant."""
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(40, 200))
    p = int(rng.integers(8, 60))
    k = int(rng.integers(2, min(p, 12) + 1))
    y = rng.integers(0, int(rng.integers(2, 7)), n)
    states = int(rng.integers(2, 6))
    Xd = rng.integers(0, states, (n, p))
    informative = rng.random(p) < 0.3
    Xd[:, informative] = (Xd[:, informative] + y[:, None] * (rng.random((n, informative.sum())) < 0.5)) % states
    half = p // 2
    noisy_copy = rng.random((n, half)) < 0.2
    Xd[:, half:2 * half] = np.where(noisy_copy, Xd[:, half:2 * half], Xd[:, :half])
    return Xd, y, k


@pytest.mark.parametrize("method", ["MIQ", "MID"])
def test_same_picks_as_reference_on_random_data(method: str) -> None:
    compared = asked = 0
    for seed in range(20):
        Xd, y, k = _random_discrete(seed)
        compared += _assert_same_clear_picks(Xd, y, k, method)
        asked += k
    assert compared >= 0.8 * asked, f"only {compared} of {asked} rounds had a clear winner: the test compares too little"


def _beyond_the_pool(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """5,200 features: 5,100 noisy copies of one class-related signal (relevant, mutually
    redundant) and 100 pure-noise columns (least relevant, hence outside pymrmr's 5,000 pool).
    Once a copy is picked the others are redundant, so without the pool noise columns would win."""
    rng = np.random.default_rng(seed)
    n = 240
    y = rng.integers(0, 4, n)
    signal = y + rng.normal(scale=0.8, size=n)
    copies = signal[:, None] + rng.normal(scale=rng.uniform(0.2, 0.5, 5100), size=(n, 5100))
    X = np.hstack([copies, rng.normal(size=(n, 100))])
    return apply_thresholds(X, fit_thresholds(X), "sigma"), y


@pytest.mark.parametrize("method", ["MIQ", "MID"])
def test_same_picks_as_reference_beyond_the_candidate_pool(method: str) -> None:
    Xd, y = _beyond_the_pool()
    k = 8
    assert _assert_same_clear_picks(Xd, y, k, method) == k
    # the pool matters on these data: every noise column lies outside it, and all of them would win
    rel = np.array([mutual_information(Xd[:, j], y) for j in range(Xd.shape[1])])
    assert rel[5100:].max() < np.sort(rel)[-5000]
    unpooled = mrmr_select(Xd, y, k, method, pool_size=None)
    assert any(j >= 5100 for j in unpooled) and not any(j >= 5100 for j in mrmr_select(Xd, y, k, method))


def _distinct_columns(Xd: np.ndarray) -> np.ndarray:
    """Drop repeated columns (real features coincide once coded, e.g. percentiles of uint8 pixels):
    which copy wins an exact tie is Peng's C++'s choice, checked against pymrmr, not the paper's."""
    _, first = np.unique(Xd, axis=1, return_index=True)
    return Xd[:, np.sort(first)]


def _matek_images(root: Path, per_class: int):
    from cytocompare import read_image
    from cytocompare.images import ImageSet

    with open(root / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    taken: dict[str, int] = {}
    arrays, labels = [], []
    for row in rows:
        if taken.get(row["label"], 0) < per_class:
            taken[row["label"]] = taken.get(row["label"], 0) + 1
            arrays.append(read_image(root / row["path"]))
            labels.append(row["label"])
    return ImageSet.from_arrays(arrays, labels)


@pytest.mark.shared_data
@pytest.mark.parametrize("method", ["MIQ", "MID"])
def test_same_picks_as_reference_on_real_features(method: str, shared_data: Path) -> None:
    """Colour statistics of real marrow cells (matek-bm, 12 a class), discretised as in fit."""
    from cytocompare_example.features import ColourStatistics

    images = _matek_images(shared_data / "matek-bm", per_class=12)
    X = ColourStatistics().transform(images)
    for disc, kw in [("sigma", {"sigma_k": 1.0}), ("quantile", {"n_bins": 4})]:
        Xd = _distinct_columns(apply_thresholds(X, fit_thresholds(X, disc, **kw), disc))
        assert _assert_same_clear_picks(Xd, images.labels, 15, method) >= 10


@pytest.mark.slow
@pytest.mark.shared_data
def test_same_picks_as_reference_on_real_handcrafted_features(shared_data: Path) -> None:
    """The paper's >6,000 handcrafted features of real cells: the pool of 5,000 is in play."""
    from cytocompare_classical.extractor import HandcraftedFeatures

    images = _matek_images(shared_data / "matek-bm", per_class=10)
    X = HandcraftedFeatures().transform(images)
    assert X.shape[1] > 5000
    X = X[:, np.all(np.isfinite(X), axis=0)]
    Xd = _distinct_columns(apply_thresholds(X, fit_thresholds(X), "sigma"))
    for method in ("MIQ", "MID"):
        assert _assert_same_clear_picks(Xd, images.labels, 10, method) >= 5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigma_thresholds_over_many_row_blocks_equal_numpys_mean_and_sd(dtype) -> None:
    """The blocked float64 sums (no float64 copy of a float32 X) give numpy's values bit for bit."""
    from cytocompare_classical import discretize

    rng = np.random.default_rng(3)
    n = 3 * discretize._SUM_BLOCK_ROWS + 17  # several blocks and a partial one
    X = (rng.normal(size=(n, 9)) * rng.exponential(5, 9) + rng.normal(0, 100, 9)).astype(dtype)
    mean = X.mean(axis=0, dtype=np.float64)
    sd = X.std(axis=0, dtype=np.float64, ddof=1)
    expected = np.stack([mean - 0.5 * sd, mean + 0.5 * sd], axis=1)
    np.testing.assert_array_equal(fit_thresholds(X, "sigma", sigma_k=0.5), expected)
    before = X.copy()
    fit_thresholds(X)
    np.testing.assert_array_equal(X, before)  # the caller's matrix is never written to
