"""Features: names, count, finiteness, NaN policy, determinism, failure handling, docs."""

from __future__ import annotations

import re
from pathlib import Path

import mahotas
import numpy as np
import pytest

from cytocompare.base import get_tags
from cytocompare.errors import DataError
from cytocompare.images import ImageSet
from cytocompare_classical.extractor import HandcraftedFeatures
from cytocompare_classical.features import compute_features, feature_names, feature_set, write_feature_docs
from cytocompare_classical.features.haralick import haralick_from_glcm
from cytocompare_classical.features.lbp import uniform_lbp

from test_segmentation import synthetic_cell  # noqa: E402  (tests dir is on sys.path under pytest)

NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")


def test_names_unique_readable_and_enough() -> None:
    full = feature_names("full")
    assert len(full) >= 6000
    assert len(set(full)) == len(full)
    assert all(NAME.match(n) for n in full)
    assert full[0] == "qc.segmentation_ok"
    for expected in ("nucleus.hsv_h.haralick_d2.contrast_mean", "cell.shape.solidity", "nucleus.grey.lbp_r1p8.bin03"):
        assert expected in full
    quick = feature_names("quick")
    assert 100 <= len(quick) <= 1000 and len(set(quick)) == len(quick)


def test_names_known_before_fit() -> None:
    ext = HandcraftedFeatures()
    assert ext.get_feature_names_out() == feature_names("full")
    assert get_tags(ext).deterministic


def test_full_row_finite_and_deterministic() -> None:
    rgb, _, _ = synthetic_cell()
    a, seg = compute_features(rgb, "full")
    b, _ = compute_features(rgb, "full")
    assert seg.ok
    assert a.shape == (len(feature_names("full")),)
    assert np.isfinite(a).all()
    assert np.array_equal(a, b)
    names = feature_names("full")
    assert a[names.index("qc.segmentation_ok")] == 1.0
    assert a[names.index("nucleus.shape.area")] > 2000


def test_transform_blank_tiny_and_zero_variance() -> None:
    rgb, _, _ = synthetic_cell(1, size=120)
    flat = rgb.copy()
    flat[..., 0] = 128  # a zero-variance channel (red constant)
    images = ImageSet.from_arrays([np.full((250, 250, 3), 230, np.uint8), np.zeros((8, 8, 3), np.uint8), flat], ["A", "B", "C"])
    ext = HandcraftedFeatures(profile="quick").fit(images)
    X = ext.transform(images)
    assert X.dtype == np.float32 and X.shape == (3, len(ext.feature_names_))
    assert np.isfinite(X).all()
    qc = ext.feature_names_.index("qc.segmentation_ok")
    assert X[0, qc] == 0 and X[1, qc] == 0 and X[2, qc] == 1
    assert [i for i, _, _ in ext.failures_] == [0, 1]
    assert np.all(X[0, 1:] == 0)
    # the zero-variance red channel: statistics defined, not NaN
    names = feature_names("full")
    full_row, _ = compute_features(flat, "full")
    assert np.isfinite(full_row).all()
    assert full_row[names.index("nucleus.red.intensity.sd")] == 0.0
    assert full_row[names.index("nucleus.red.haralick_d1.correlation_mean")] == 0.0


def test_raise_names_the_path() -> None:
    images = ImageSet.from_arrays([np.full((64, 64, 3), 230, np.uint8)], ["A"])
    ext = HandcraftedFeatures(profile="quick", on_segmentation_failure="raise").fit(images)
    with pytest.raises(DataError, match=r"mem://0.*segmentation failed"):
        ext.transform(images)


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        HandcraftedFeatures(profile="nope").fit(None)
    with pytest.raises(ValueError):
        HandcraftedFeatures(on_segmentation_failure="skip").fit(None)


def test_mask_dir_and_joblib(tmp_path: Path) -> None:
    rgb, _, _ = synthetic_cell(2, size=120)
    images = ImageSet.from_arrays([rgb, rgb], ["A", "A"])
    serial = HandcraftedFeatures(profile="quick", mask_dir=str(tmp_path)).fit(images).transform(images)
    parallel = HandcraftedFeatures(profile="quick", n_jobs=2).fit(images).transform(images)
    assert np.array_equal(serial, parallel)
    assert len(list(tmp_path.glob("*.png"))) == 2


def test_haralick_matches_mahotas() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 8, (40, 40)).astype(np.uint8)
    ref = mahotas.features.haralick(img, distance=1)  # (4 directions, 13), symmetric GLCM
    mats = [mahotas.features.texture.cooccurence(img, d) for d in range(4)]
    ours = haralick_from_glcm(np.stack(mats).astype(np.float64))
    # the features defined identically in both: ASM, contrast, correlation, IDM, entropy, IMC1
    for k in (0, 1, 2, 4, 8, 11):
        np.testing.assert_allclose(ours[:, k], ref[:, k], rtol=1e-6, atol=1e-9)


def test_lbp_matches_skimage() -> None:
    from skimage.feature import local_binary_pattern

    rng = np.random.default_rng(1)
    img = rng.random((30, 30)).astype(np.float32)
    ours = uniform_lbp(img[None], 1, 8)[0]
    ref = local_binary_pattern(img.astype(np.float64), 8, 1, method="uniform")
    inner = (slice(2, -2), slice(2, -2))  # skimage treats borders as 0, we replicate edges
    assert (ours[inner] == ref[inner]).mean() > 0.97


def test_every_family_documented(tmp_path: Path) -> None:
    out = write_feature_docs(tmp_path / "features.md")
    text = out.read_text()
    assert str(len(feature_names("full"))) in text
    assert "never published" in text
    families = feature_set("full").families
    assert len(families) >= 10
    for fam in families:
        assert (type(fam).__doc__ or "").strip(), fam
        assert fam.feature_docs, fam
        assert f"### `{fam.name}`" in text
        assert fam.describe()["count"] == len(fam.names())
        for setting in type(fam).settings_spec:
            assert f"| `{setting}` |" in text, (fam.name, setting)


def test_committed_docs_are_current() -> None:
    docs = Path(__file__).resolve().parents[3] / "docs" / "features.md"
    if not docs.exists():
        pytest.skip("docs/features.md not present")
    from cytocompare_classical.features.docs import render

    assert docs.read_text() == render(), "regenerate with write_feature_docs('docs/features.md')"
