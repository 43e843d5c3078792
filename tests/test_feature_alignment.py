"""test_data.feature_alignment: the external set's features mapped to the training set's mean and sd."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from cytocompare.feature_alignment import align_to_training


def test_matches_two_standard_scalers():
    rng = np.random.default_rng(0)
    train = rng.normal(3.0, 2.0, size=(200, 7))
    test = rng.normal(-1.0, 0.5, size=(50, 7)) * np.arange(1, 8)
    ref_train, ref_test = StandardScaler().fit(train), StandardScaler().fit(test)
    expected = ref_train.inverse_transform(ref_test.transform(test))
    got = align_to_training(test, train)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.mean(0), train.mean(0), atol=1e-4)
    np.testing.assert_allclose(got.std(0), train.std(0), rtol=1e-4)


def test_a_lab_shift_disappears_and_the_class_structure_stays():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 100)
    train = rng.normal(size=(200, 4)) + labels[:, None] * 2.0
    test = (rng.normal(size=(200, 4)) + labels[:, None] * 2.0) * 3.0 + 40.0  # another lab: scaled and shifted
    aligned = align_to_training(test, train)
    # the class means of the aligned external cells land on the training class means
    for c in (0, 1):
        np.testing.assert_allclose(aligned[labels == c].mean(0), train[labels == c].mean(0), atol=0.35)


def test_nan_cells_constant_features_and_blocks():
    train = np.array([[1.0, 5.0], [3.0, 5.0], [np.nan, 5.0]] * 4000)  # > one 8192-row block
    test = np.array([[10.0, 7.0], [20.0, 7.0], [np.nan, 7.0]])
    got = align_to_training(test, train)
    np.testing.assert_allclose(got[:2, 0], [1.0, 3.0], rtol=1e-6)  # mean 2, sd 1 on both sides
    assert np.isnan(got[2, 0])
    np.testing.assert_array_equal(got[:, 1], [5.0, 5.0, 5.0])  # constant on the test set -> the training mean


def test_columns_must_match():
    with pytest.raises(ValueError, match="same columns"):
        align_to_training(np.zeros((3, 2)), np.zeros((3, 4)))
