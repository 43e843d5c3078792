"""``handcrafted`` says which cells failed, and why, from its feature matrix (issue 8.3).

The rows come from the ``qc.segmentation_ok`` column alone (a matrix read back from the feature
cache is all a run has); the cause is the segmentation's own reason, recovered by segmenting the
failed cells again. No column is added: the feature count of every profile is unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest

from cytocompare.datasets import bundled_sample_path, load_dataset
from cytocompare.feature_failures import ReportsFeatureFailures, apply_feature_failures
from cytocompare.images import ImageSet
from cytocompare_classical.extractor import HandcraftedFeatures
from cytocompare_classical.features import feature_names

BACKGROUND = (235, 228, 232)
ERYTHROCYTE = (215, 160, 170)  # pink, no nucleus


def _erythrocytes_only() -> np.ndarray:
    img = np.empty((120, 120, 3), np.uint8)
    img[:] = BACKGROUND
    yy, xx = np.mgrid[:120, :120]
    img[(yy - 60) ** 2 + (xx - 60) ** 2 <= 30 ** 2] = ERYTHROCYTE
    return img


@pytest.fixture(scope="module")
def cells() -> ImageSet:
    """Three real bundled cells, then a white, a black, a tiny and an erythrocyte-only image."""
    real = load_dataset(bundled_sample_path(), n_jobs=1).images
    arrays = [real[i] for i in (0, 60, 130)]
    arrays += [np.full((250, 250, 3), 255, np.uint8), np.zeros((250, 250, 3), np.uint8),
               np.zeros((10, 10, 3), np.uint8), _erythrocytes_only()]
    return ImageSet.from_arrays(arrays, ["BLA", "LYT", "NGS", "BLA", "LYT", "NIF", "NIF"])


def test_the_cause_of_each_failed_cell(cells: ImageSet) -> None:
    ext = HandcraftedFeatures(profile="quick").fit(cells)
    assert isinstance(ext, ReportsFeatureFailures)
    F = ext.transform(cells)
    reasons = ext.failure_reasons(F, cells)
    assert reasons[:3] == [None, None, None]  # the real cells
    assert "no contrast" in reasons[3] and "blank or uniform image" in reasons[3]
    assert "no contrast" in reasons[4]
    assert "too small" in reasons[5]
    assert "violet" in reasons[6]
    # the same as transform's own record of the failures
    assert [(i, r) for i, _, r in ext.failures_] == [(i, reasons[i].removeprefix("cell segmentation failed: "))
                                                     for i in range(3, 7)]


def test_rows_come_from_the_matrix_alone(cells: ImageSet) -> None:
    ext = HandcraftedFeatures(profile="quick").fit(cells)
    F = ext.transform(cells)
    fresh = HandcraftedFeatures(profile="quick")  # another instance, never fitted nor transformed
    assert [r is not None for r in fresh.failure_reasons(F)] == [False] * 3 + [True] * 4
    # only the qc column decides: mark a good row failed and it is reported (generic cause without images)
    G = F.copy()
    G[0, feature_names("quick").index("qc.segmentation_ok")] = 0
    assert fresh.failure_reasons(G)[0] == "cell segmentation failed (qc.segmentation_ok = 0)"
    with pytest.raises(ValueError, match=r"expected features of shape \(n, \d+\)"):
        fresh.failure_reasons(F[:, :10])


def test_the_segmentation_parameters_of_the_extractor_are_used_for_the_cause(cells: ImageSet) -> None:
    strict = HandcraftedFeatures(profile="quick", segmentation={"min_violet": 200}).fit(cells)
    F = strict.transform(cells)
    reasons = strict.failure_reasons(F, cells)
    assert all("B - G >= 200" in reasons[i] for i in range(3))  # real cells fail under this setting


def test_no_feature_column_is_added() -> None:
    assert len(feature_names("full")) == 6120
    assert [n for n in feature_names("full") if n.startswith("qc.")] == ["qc.segmentation_ok"]


def test_the_policies_on_real_files(cells: ImageSet) -> None:
    ext = HandcraftedFeatures(profile="quick").fit(cells)
    F = ext.transform(cells)
    skip = apply_feature_failures(ext, F, cells, "skip", "classical")
    assert skip.excluded.tolist() == [3, 4, 5, 6]
    assert {r[1] for r in skip.rows()} == {"mem://3", "mem://4", "mem://5", "mem://6"}
