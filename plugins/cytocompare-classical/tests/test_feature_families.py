"""Feature families own their settings: the registry, profiles, overrides and the one-file rule."""

from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import cytocompare_classical.features as F
from cytocompare.images import ImageSet
from cytocompare_classical.extractor import HandcraftedFeatures
from cytocompare_classical.features import registry
from cytocompare_classical.features.base import ALL_CHANNELS, FeatureFamily, Setting, Settings
from cytocompare_classical.features.docs import render

from test_segmentation import synthetic_cell  # noqa: E402  (tests dir is on sys.path under pytest)

BUILT_IN = ("qc", "shape", "intensity", "hist", "haralick", "lbp", "zernike", "tas", "gabor", "granulometry")


def test_registry_finds_every_family_in_column_order() -> None:
    assert tuple(cls.name for cls in registry.family_classes()) == BUILT_IN
    orders = [cls.column_order for cls in registry.family_classes()]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    # one family per module: adding a family is adding a file
    modules = [cls.__module__ for cls in registry.family_classes()]
    assert len(set(modules)) == len(modules)


def test_profiles_are_the_families_settings() -> None:
    full, quick = F.feature_set("full"), F.feature_set("quick")
    assert len(full.names()) == 6120 and len(quick.names()) == 567
    assert full.family("haralick").settings.distances == (1, 2, 4)
    assert quick.family("haralick").settings.distances == (1,)
    assert quick.family("tas").names() == []  # no channels in quick: no columns
    # a setting without a quick value keeps its full value
    assert quick.family("shape").settings.fourier_descriptors == 4
    assert full.family("granulometry").settings.channels == quick.family("granulometry").settings.channels + ("hed_h",)


def test_channels_needed_is_the_union_in_channel_order() -> None:
    quick = F.feature_set("quick")
    assert quick.channels_needed() == ("grey", "hsv_s", "hed_h")
    assert F.feature_set("full").channels_needed() == ALL_CHANNELS
    only_lbp = F.feature_set("quick", {"intensity": {"channels": []}, "hist": {"channels": []},
                                       "haralick": {"channels": []}, "zernike": {"channels": []},
                                       "gabor": {"channels": []}, "granulometry": {"channels": []},
                                       "lbp": {"configs": [[1, 8, ["lab_b", "red"]]]}})
    assert only_lbp.channels_needed() == ("red", "lab_b")


def test_overrides_change_names_and_values_like_the_profile() -> None:
    fs = F.feature_set("quick", {"haralick": {"distances": [1, 2]}})
    names = fs.names()
    assert "nucleus.grey.haralick_d2.contrast_mean" in names
    assert len(names) == 567 + 3 * 26
    # the same settings given as the profile's own values name the same columns
    same = F.feature_set("quick", {"haralick": {"distances": [1], "levels": 16}})
    assert same.names() == F.feature_names("quick")
    rgb, _, _ = synthetic_cell()
    a, _ = F.compute_features(rgb, same)
    b, _ = F.compute_features(rgb, "quick")
    assert np.array_equal(a, b)
    # full's haralick inside quick: identical to those columns of full
    mixed = F.feature_set("quick", {"haralick": F.feature_set("full").family("haralick").settings.as_dict()})
    row, _ = F.compute_features(rgb, mixed)
    full_row, _ = F.compute_features(rgb, "full")
    full_names, mixed_names = F.feature_names("full"), mixed.names()
    cols = [n for n in mixed_names if ".haralick_" in n]
    assert len(cols) == 2808
    np.testing.assert_array_equal(row[[mixed_names.index(n) for n in cols]],
                                  full_row[[full_names.index(n) for n in cols]])


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"haralik": {}}, r"unknown feature family 'haralik'.*haralick"),
        ({"haralick": {"distance": [1]}}, r"haralick\.distance.*distances"),
        ({"haralick": {"levels": 1000}}, r"haralick\.levels must be an integer from 2 to 256"),
        ({"intensity": {"channels": ["gray"]}}, r"intensity\.channels unknown channel.*'gray'"),
        ({"lbp": {"configs": [[1, 8, []]]}}, r"lbp\.configs .*no channel"),
        ({"granulometry": {"sizes": [7, 3]}}, r"granulometry\.sizes must be strictly increasing"),
        ({"gabor": {"frequencies": [0.1, 0.101]}}, r"gives the feature name .*gabor\.f10_o000_mean.* twice"),
        ({"haralick": [1, 2]}, r"settings of feature family 'haralick' must be a mapping"),
    ],
    ids=["family", "setting", "levels", "channel", "lbp", "sizes", "duplicate-names", "not-a-mapping"],
)
def test_bad_settings_are_named(settings: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        F.feature_set("full", settings)
    with pytest.raises(ValueError, match=match):
        HandcraftedFeatures(feature_settings=settings).get_feature_names_out()


def test_extractor_takes_feature_settings() -> None:
    rgb, _, _ = synthetic_cell(2, size=120)
    images = ImageSet.from_arrays([rgb], ["A"])
    ext = HandcraftedFeatures(profile="quick", feature_settings={"tas": {"channels": ["grey"]}})
    assert ext.get_feature_names_out() == F.feature_set("quick", {"tas": {"channels": ("grey",)}}).names()
    X = ext.fit(images).transform(images)
    assert X.shape == (1, 567 + 3 * 54)
    assert ext.feature_names_ == ext.get_feature_names_out()
    assert np.any(X[0, [i for i, n in enumerate(ext.feature_names_) if ".tas." in n]] != 0)
    # parameters round-trip as scikit-learn expects (the feature cache keys on them)
    assert ext.get_params()["feature_settings"] == {"tas": {"channels": ["grey"]}}


def test_settings_are_read_only_hashable_and_picklable() -> None:
    fs = F.feature_set("quick")
    s = fs.family("haralick").settings
    with pytest.raises(AttributeError, match="read-only"):
        s.levels = 8  # type: ignore[misc]
    with pytest.raises(AttributeError, match="no setting 'level'"):
        _ = s.level
    assert hash(s) == hash(Settings(s.as_dict())) and s == Settings(s.as_dict())
    again = pickle.loads(pickle.dumps(fs))  # the extractor ships feature sets to joblib workers
    assert again == fs and again.names() == fs.names()


def test_register_refuses_clashes(monkeypatch: pytest.MonkeyPatch) -> None:
    def family(**attrs: object) -> type[FeatureFamily]:
        body = {"__doc__": "A test family.", "feature_docs": {"x": "x"}, "column_order": 5000, "name": "t", **attrs}
        return type("TestFamily", (FeatureFamily,), body)

    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    with pytest.raises(TypeError, match="name 'haralick'.*taken"):
        registry.register_family(family(name="haralick"))
    with pytest.raises(TypeError, match="column_order 50 .*taken by Haralick"):
        registry.register_family(family(column_order=50))
    with pytest.raises(TypeError, match="needs a name, a docstring and feature_docs"):
        registry.register_family(family(feature_docs={}))
    with pytest.raises(TypeError, match="setting n in profile 'quick' must be a positive integer"):
        from cytocompare_classical.features.base import check_positive_int

        registry.register_family(family(settings_spec={"n": Setting(3, "n", check=check_positive_int, quick=0)}))
    with pytest.raises(TypeError, match="unknown profile"):
        Setting(1, "x", medium=2)


def _docs_example() -> str:
    text = render()
    section = text[text.index("## Adding a family"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the how-to has a code example"
    return match.group(1)


def test_adding_a_family_is_adding_one_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The docs' example, saved as one module of the features package, joins every profile."""
    (tmp_path / "dark.py").write_text(_docs_example())
    monkeypatch.setattr(F, "__path__", [*F.__path__, str(tmp_path)])  # the module lies in the package
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.delitem(sys.modules, "cytocompare_classical.features.dark", raising=False)
    try:
        assert [cls.name for cls in registry.family_classes()][-1] == "dark"
        full_names = F.feature_names("full")
        assert full_names[:6120] == F.feature_set("full").names()[:6120]  # the old columns stay first
        assert full_names[6120:] == [f"{m}.{c}.dark.below_{t}" for m in ("cell", "nucleus", "cytoplasm")
                                     for c in ("grey", "hed_h") for t in ("25", "50")]
        assert len(F.feature_names("quick")) == 567 + 3
        rgb, _, _ = synthetic_cell()
        ext = HandcraftedFeatures(profile="quick")
        X = ext.fit(ImageSet.from_arrays([rgb], ["A"])).transform(ImageSet.from_arrays([rgb], ["A"]))
        assert X.shape == (1, 570)
        dark = dict(zip(ext.feature_names_[-3:], X[0, -3:]))
        assert dark["nucleus.grey.dark.below_50"] > 0.9 and dark["cytoplasm.grey.dark.below_50"] < 0.1
        assert "### `dark` (DarkFraction)" in render()
    finally:
        sys.modules.pop("cytocompare_classical.features.dark", None)
    # gone again once the module is (the monkeypatches are undone after the test)
