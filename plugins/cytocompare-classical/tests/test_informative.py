"""Dropping constant and exactly duplicated columns before mRMR (issue 10), against references."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_selection import VarianceThreshold

from cytocompare_classical.informative import informative_columns
from cytocompare_classical.mrmr import MRMRSelector


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
