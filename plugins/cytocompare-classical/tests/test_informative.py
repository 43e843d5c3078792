"""Dropping constant, duplicated and nearly copied columns before mRMR (issue 10), against references."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_selection import VarianceThreshold

from cytocompare_classical import informative
from cytocompare_classical.informative import REASONS, clean_columns, informative_columns
from cytocompare_classical.mrmr import MRMRSelector, mutual_information


def _matrix(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 120
    y = np.repeat(np.array(["A", "B", "C"]), n // 3)
    base = rng.normal(size=(n, 12)).astype(np.float32)
    base[:, :3] += (y == "A")[:, None] * 1.5  # informative columns
    X = np.column_stack([
        base,
        np.full(n, 3.0, np.float32),  # constant
        base[:, 1],  # a duplicate of column 1
        np.zeros(n, np.float32),  # constant
        base[:, 1],  # another copy of column 1
        base[:, 5] * 2,  # a scaled copy: not an exact duplicate, kept
        base[:, 0],  # a copy of the most relevant column
    ]).astype(np.float32)
    return X, y


def _reference(X: np.ndarray) -> np.ndarray:
    """sklearn's VarianceThreshold(0) for the constants, then the first of each group of equal
    columns by a pairwise comparison."""
    support = np.flatnonzero(VarianceThreshold(0.0).fit(X).get_support())
    kept: list[int] = []
    for j in support:
        if not any(np.array_equal(X[:, j], X[:, i]) for i in kept):
            kept.append(int(j))
    return np.array(kept)


@pytest.mark.parametrize("seed", [0, 1])
def test_informative_columns_match_the_reference(seed: int) -> None:
    X, _ = _matrix(seed)
    kept, rep = informative_columns(X)
    np.testing.assert_array_equal(kept, _reference(X))
    assert kept.tolist() == list(range(12)) + [16]
    assert rep[12] == rep[14] == -1 and rep[13] == rep[15] == 1 and rep[17] == 0 and rep[16] == 16


def test_selector_drops_them_on_the_training_rows_and_keeps_input_indices() -> None:
    X, y = _matrix()
    sel = MRMRSelector(k=8, drop_uninformative=True).fit(X, y)
    assert (sel.n_constant_, sel.n_duplicate_) == (2, 3)
    assert sel.informative_.tolist() == _reference(X).tolist()
    # the same picks as mRMR run by hand on the cleaned matrix, mapped back to input columns
    ref = _reference(X)
    by_hand = MRMRSelector(k=8).fit(X[:, ref], y)
    np.testing.assert_array_equal(sel.selected_, ref[by_hand.selected_])
    assert not set(sel.selected_) & {12, 13, 14, 15, 17}
    np.testing.assert_array_equal(sel.transform(X), X[:, sel.selected_])
    assert sel.relevance_[17] == sel.relevance_[0] and sel.relevance_[12] == 0.0
    # without the option every column is a candidate (pymrmr's behaviour)
    plain = MRMRSelector(k=8).fit(X, y)
    assert plain.informative_.size == X.shape[1] and plain.n_constant_ == plain.n_duplicate_ == 0


def test_a_column_constant_only_in_training_is_dropped_by_training_data_alone() -> None:
    X, y = _matrix()
    X[:60, 4] = 0.0  # constant on these rows only
    kept_train, _ = informative_columns(X[:60])
    kept_all, _ = informative_columns(X)
    assert 4 not in kept_train and 4 in kept_all


# ------------------------------------------------------------------ near-copies (max_correlation)

def _messy(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Informative columns plus a constant, a duplicate, near-copies of several kinds, and
    columns that look alike but are no copies."""
    rng = np.random.default_rng(seed)
    n = 300
    y = np.repeat(np.array(["A", "B", "C"]), n // 3)
    base = rng.normal(size=(n, 8))
    base[:, :3] += (y == "A")[:, None] * 1.5
    rare = np.zeros(n)
    rare[rng.choice(n, 2, replace=False)] = 1.0  # one value on 298 / 300 rows (variety 0.0067)
    common = np.zeros(n)
    common[rng.choice(n, 30, replace=False)] = rng.normal(size=30)  # variety 0.1: kept
    X = np.column_stack([
        base,                                            # 0-7
        base[:, 2] + 1e-4 * rng.normal(size=n),          # 8: near-copy of 2
        -3.0 * base[:, 4] + 7.0,                         # 9: exact linear copy of 4 (r = -1)
        rare,                                            # 10: one value on 298 of 300 rows: kept
        np.full(n, 2.0),                                 # 11: constant
        base[:, 5],                                      # 12: exact duplicate of 5
        base[:, 8 - 1] * 0.7 + base[:, 6] * 0.7,         # 13: correlated (r ~ 0.7), kept
        common,                                          # 14: sparse but varied, kept
        base[:, 2] + 2e-4 * rng.normal(size=n),          # 15: another near-copy of 2 (and of 8)
    ])
    return X, y


def _reference_clean(X: np.ndarray, max_correlation: float | None) -> np.ndarray:
    """Column by column with np.unique and np.corrcoef: constant, duplicate, near-copy of an
    earlier kept column."""
    kept: list[int] = []
    for j in range(X.shape[1]):
        if np.unique(X[:, j]).size == 1:
            continue
        if any(np.array_equal(X[:, j], X[:, i]) for i in kept):
            continue
        if max_correlation is not None and any(
                abs(np.corrcoef(X[:, i], X[:, j])[0, 1]) > max_correlation for i in kept):
            continue
        kept.append(j)
    return np.array(kept)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("max_correlation", [None, 0.999, 0.6])
def test_clean_columns_match_the_reference(seed: int, max_correlation: float | None) -> None:
    X, _ = _messy(seed)
    kept, rep, reason = clean_columns(X, max_correlation)
    np.testing.assert_array_equal(kept, _reference_clean(X, max_correlation))
    assert reason[11] == "constant" and rep[11] == -1 and reason[12] == "duplicate" and rep[12] == 5
    if max_correlation == 0.999:
        assert (reason[8], rep[8]) == ("near-copy", 2)
        assert (reason[9], rep[9]) == ("near-copy", 4)  # a negative correlation counts too
        assert (reason[15], rep[15]) == ("near-copy", 2)  # stand-in: the kept column, not 8
        assert reason[10] == reason[13] == reason[14] == "kept"
    # every dropped column that copies something stands in for a kept column
    assert set(rep[rep >= 0]) <= set(kept)
    assert {str(r) for r in reason} <= set(REASONS)


def test_defaults_are_informative_columns() -> None:
    X, _ = _messy()
    kept, rep, _ = clean_columns(X)
    k2, r2 = informative_columns(X)
    np.testing.assert_array_equal(kept, k2)
    np.testing.assert_array_equal(rep, r2)


def test_the_blocked_correlation_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    X, _ = _messy()
    X = np.column_stack([X, X[:, :8] + 1e-5 * np.random.default_rng(3).normal(size=(X.shape[0], 8))])
    whole = clean_columns(X, 0.999)
    monkeypatch.setattr(informative, "_BLOCK", 3)
    blocked = clean_columns(X, 0.999)
    for a, b in zip(whole, blocked):
        np.testing.assert_array_equal(a, b)
    assert whole.kept.tolist() == _reference_clean(X, 0.999).tolist()
    assert (whole.reason == "near-copy").sum() == 3 + 8


def test_a_duplicate_of_a_near_copy_stands_in_for_the_kept_column() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=100)
    b = a + 1e-5 * rng.normal(size=100)
    X = np.column_stack([a, b, b])
    kept, rep, reason = clean_columns(X, max_correlation=0.999)
    assert kept.tolist() == [0] and rep.tolist() == [0, 0, 0]
    assert reason.tolist() == ["kept", "near-copy", "duplicate"]


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5])
def test_clean_columns_refuses_bad_values(value: float) -> None:
    with pytest.raises(ValueError, match="max_correlation"):
        clean_columns(np.eye(3), value)


def test_selector_drops_near_copies_on_the_training_rows() -> None:
    X, y = _messy()
    sel = MRMRSelector(k=6, drop_uninformative=True, max_correlation=0.999).fit(X, y)
    ref = _reference_clean(X, 0.999)
    assert sel.informative_.tolist() == ref.tolist()
    assert (sel.n_constant_, sel.n_duplicate_, sel.n_near_copy_) == (1, 1, 3)
    by_hand = MRMRSelector(k=6).fit(X[:, ref], y)
    np.testing.assert_array_equal(sel.selected_, ref[by_hand.selected_])
    assert not set(sel.selected_) & {8, 9, 11, 12, 15}
    # a dropped column's relevance is its own I(f; c), computed with the training thresholds
    codes = sel.discretize(X)
    for j in (8, 9, 12, 15):
        assert sel.relevance_[j] == pytest.approx(mutual_information(codes[:, j], np.unique(y, return_inverse=True)[1]))
    assert sel.relevance_[11] == 0.0 and sel.relevance_[12] == sel.relevance_[5]
    # the default leaves near-copies to mRMR, as before
    plain = MRMRSelector(k=6, drop_uninformative=True).fit(X, y)
    assert plain.n_near_copy_ == 0 and {8, 9, 15} <= set(plain.informative_)


def test_near_copy_decided_by_the_training_rows_alone() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    b = a + 1e-5 * rng.normal(size=200)
    b[100:] = rng.normal(size=100)  # a near-copy of a on the first 100 rows only
    X = np.column_stack([a, b, rng.normal(size=200)])
    assert clean_columns(X[:100], 0.999).reason[1] == "near-copy"
    assert clean_columns(X, 0.999).reason[1] == "kept"
    y = np.tile(["A", "B"], 100)
    sel = MRMRSelector(k=2, drop_uninformative=True, max_correlation=0.999).fit(X[:100], y[:100])
    assert sel.n_near_copy_ == 1 and 1 not in sel.informative_
    sel = MRMRSelector(k=2, drop_uninformative=True, max_correlation=0.999).fit(X, y)
    assert sel.n_near_copy_ == 0 and 1 in sel.informative_


def test_max_correlation_needs_drop_uninformative() -> None:
    X, y = _messy()
    with pytest.raises(ValueError, match="drop_uninformative"):
        MRMRSelector(k=3, max_correlation=0.999).fit(X, y)
    with pytest.raises(ValueError, match="drop_uninformative"):
        MRMRSelector(k=3, max_correlation=0.999).validate_params()
    MRMRSelector(k=3, drop_uninformative=True, max_correlation=0.999).validate_params()


@pytest.mark.parametrize("value", [0.0, 2.0, "high"])
def test_selector_refuses_bad_max_correlation(value: object) -> None:
    X, y = _messy()
    with pytest.raises(ValueError, match="max_correlation"):
        MRMRSelector(k=3, drop_uninformative=True, max_correlation=value).fit(X, y)
