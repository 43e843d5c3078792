"""Issue 8, items 2, 4, 9 and 14: what ``validate`` (``config.check_against_registry``) catches before
any work, and which protocol changes block a resume.

* 2: a class code outside the class scheme (``label_map`` target, ``classes``, tolerated pairs,
  no-call classes; folder names through ``classes.check_labels`` once the data is listed);
* 4: a misspelt component under ``optional: true`` is an error, not "plugin not installed";
* 9: parameter VALUES: every component is built and checked (scikit-learn constraints,
  ``validate_params()``, constructor errors), all problems in one message;
* 14: ``Protocol.digest`` covers only result-relevant keys; ``protocol_changes`` names them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cytocompare.classes import check_labels, load_scheme, matek2021, unknown_labels
from cytocompare.config import (
    RESULT_NEUTRAL_KEYS,
    check_against_registry,
    parse_protocol,
    protocol_changes,
    result_relevant,
    validate_protocol,
)
from cytocompare.datasets import bundled_sample_path
from cytocompare.errors import DataError, ProtocolError
from cytocompare.plugins import get_registry
from cytocompare.registry import ComponentSpec, Registry, protocol_defaults
from tests.test_config import GOOD

ROOT = Path(__file__).parents[1]

BASE = GOOD  # the smallest valid protocol, one home: tests/test_config.py

CLASSICAL = """
  classical:
    features: {{name: handcrafted, params: {{profile: {profile}}}}}
    selector: {{name: mrmr, params: {{k: 5, method: {method}}}}}
    classifier: {{name: svm-rbf, params: {{class_weight: {class_weight}, C: {C}}}}}
    splits: [cv5]
"""


def _problems(text: str, registry: Registry | None = None) -> str:
    with pytest.raises(ProtocolError) as exc:
        check_against_registry(parse_protocol(text), registry or get_registry(), "p.yaml")
    return str(exc.value)


def _needs(kind: str, name: str) -> None:
    if (kind, name) not in get_registry():
        pytest.skip(f"{kind} {name!r} is not installed (its plugin is absent)")


def _needs_constraints(kind: str, name: str) -> None:
    _needs(kind, name)
    if not getattr(get_registry().get(kind, name).load(), "_parameter_constraints", None):  # pragma: no cover
        pytest.skip(f"{kind} {name!r} declares no _parameter_constraints")


def _registry_with(*extra: ComponentSpec) -> Registry:
    reg = Registry()
    for spec in get_registry():
        reg.add(spec)
    for spec in extra:
        reg.add(spec)
    return reg


def _spec(name: str, factory: Any, kind: str = "classifier") -> ComponentSpec:
    return ComponentSpec(name=name, kind=kind, factory=factory,  # type: ignore[arg-type]
                         plugin="test", distribution="test", version="0")


def _classical(**values: str) -> str:
    good = {"profile": "quick", "method": "MIQ", "class_weight": "balanced", "C": "1.0"}
    return BASE + CLASSICAL.format(**(good | values))


# ------------------------------------------------------------------ item 9: parameter values
def test_good_classical_method_builds():
    _needs("feature_extractor", "handcrafted")
    assert check_against_registry(parse_protocol(_classical()), get_registry()) == []


def test_bad_feature_profile_is_reported_with_the_choices():
    _needs("feature_extractor", "handcrafted")
    msg = _problems(_classical(profile="fulll"))
    assert "methods.classical.features.params\n" in msg
    assert "'fulll'" in msg and "'full'" in msg and "'quick'" in msg


@pytest.mark.parametrize("settings, words", [
    ("{feature_settings: {haralik: {}}}", ["haralik", "haralick"]),
    ("{feature_settings: {haralick: {distancs: [1]}}}", ["distancs", "distances"]),
    ("{segmentation: {min_violt: 3}}", ["min_violt", "min_violet"]),
])
def test_bad_extractor_settings_are_reported_without_computing(settings, words):
    _needs("feature_extractor", "handcrafted")
    text = _classical().replace("params: {profile: quick}", f"params: {settings}")
    msg = _problems(text)
    assert "methods.classical.features.params" in msg and all(w in msg for w in words)


def test_bad_mrmr_method_is_reported_with_the_choices():
    _needs_constraints("feature_selector", "mrmr")
    msg = _problems(_classical(method="MIX"))
    assert "methods.classical.selector.params.method\n" in msg
    assert "'MIX'" in msg and "'MIQ'" in msg and "'MID'" in msg


def test_mrmr_max_correlation_without_drop_uninformative_is_reported():
    _needs_constraints("feature_selector", "mrmr")
    msg = _problems(_classical(method="MIQ, max_correlation: 0.999"))
    assert "methods.classical.selector" in msg and "drop_uninformative" in msg
    good = _classical(method="MIQ, drop_uninformative: true, max_correlation: 0.999")
    assert check_against_registry(parse_protocol(good), get_registry()) == []
    msg = _problems(_classical(method="MIQ, drop_uninformative: true, max_correlation: 1.5"))
    assert "methods.classical.selector.params.max_correlation\n" in msg


def test_bad_class_weight_is_reported_with_the_choices():
    _needs_constraints("classifier", "svm-rbf")
    msg = _problems(_classical(class_weight="balancd"))
    assert "methods.classical.classifier.params.class_weight\n" in msg
    assert "'balancd'" in msg and "'balanced'" in msg


def test_non_numeric_C_is_reported():
    _needs_constraints("classifier", "svm-rbf")
    msg = _problems(_classical(C="abc"))
    assert "methods.classical.classifier.params.C\n" in msg and "'abc'" in msg and "float" in msg


def test_all_four_bad_values_in_one_message():
    _needs("feature_extractor", "handcrafted")
    _needs_constraints("feature_selector", "mrmr")
    _needs_constraints("classifier", "svm-rbf")
    msg = _problems(_classical(profile="fulll", method="MIX", class_weight="balancd", C="abc") + "reports: [tabel1]\n")
    for where in ("features.params", "selector.params.method", "classifier.params.class_weight",
                  "classifier.params.C"):
        assert f"methods.classical.{where}" in msg
    assert "tabel1" in msg  # with the other kinds of problem too
    assert msg.count("\nmethods.classical.") == 4


def test_bad_values_of_an_optional_method_with_its_plugin_installed_are_errors():
    _needs_constraints("classifier", "svm-rbf")
    text = _classical(C="abc").replace("  classical:\n", "  classical:\n    optional: true\n")
    assert "methods.classical.classifier.params.C" in _problems(text)


def test_the_protocols_seed_is_checked_where_it_is_injected():
    _needs_constraints("classifier", "svm-rbf")
    msg = _problems(_classical() + "seed: -1\n")
    assert "seed (given to methods.classical.classifier.params.random_state)" in msg


class _RaisesInInit:
    input = "images"

    def __init__(self, size: int = 1) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size


class _DeclaresValidate:
    input = "images"

    def __init__(self, mode: str = "a") -> None:
        self.mode = mode

    def validate_params(self) -> None:
        if self.mode not in ("a", "b"):
            raise ValueError(f"mode must be 'a' or 'b', got {self.mode!r}")


def test_constructor_and_validate_params_errors_are_reported():
    reg = _registry_with(_spec("raises-in-init", _RaisesInInit), _spec("declares-validate", _DeclaresValidate))
    text = BASE + ("  a:\n    classifier: {name: raises-in-init, params: {size: 0}}\n    splits: [cv5]\n"
                   "  b:\n    classifier: {name: declares-validate, params: {mode: c}}\n    splits: [cv5]\n")
    msg = _problems(text, reg)
    assert "methods.a.classifier.params\n    classifier 'raises-in-init': size must be >= 1, got 0" in msg
    assert "methods.b.classifier.params\n    classifier 'declares-validate': mode must be 'a' or 'b', got 'c'" in msg
    good = text.replace("size: 0", "size: 2").replace("mode: c", "mode: b")
    assert check_against_registry(parse_protocol(good), reg) == []


def test_a_run_stops_on_a_bad_value_before_writing_anything(tmp_path):
    _needs_constraints("classifier", "svm-rbf")
    from cytocompare.runner import Runner

    out = tmp_path / "run"
    protocol = parse_protocol(_classical(C="abc").replace("somewhere", "bundled:matek-bm-sample"))
    with pytest.raises(ProtocolError, match=r"methods\.classical\.classifier\.params\.C"):
        Runner(protocol, out, log=lambda _m: None).run()
    assert not out.exists() or not any(out.iterdir())


def test_the_check_builds_components_with_the_runners_injection_rule():
    from cytocompare.runner import protocol_defaults as runner_rule

    for spec in get_registry():
        if spec.kind in ("feature_extractor", "feature_selector", "classifier"):
            factory = spec.load()
            for params in ({}, {"n_jobs": 1}):
                assert protocol_defaults(spec.kind, params, factory, seed=3, n_jobs=4) == runner_rule(
                    spec.kind, params, factory, seed=3, n_jobs=4)


# ------------------------------------------------------------------ item 4: optional near misses
def test_misspelt_component_of_an_optional_method_is_an_error():
    _needs("classifier", "svm-rbf")
    text = BASE + "  later:\n    optional: true\n    classifier: {name: svm-rfb}\n    splits: [cv5]\n"
    msg = _problems(text)
    assert "methods.later.classifier.name\n" in msg and "did you mean 'svm-rbf'" in msg


def test_optional_method_whose_plugin_is_missing_is_still_skipped():
    text = BASE + ("  later:\n    optional: true\n    features: {name: colour-stats}\n"
                   "    classifier: {name: not-installed-yet}\n    splits: [cv5]\n")
    assert check_against_registry(parse_protocol(text), get_registry()) == ["later"]


def test_a_near_miss_is_reported_even_next_to_a_truly_missing_component():
    _needs("feature_selector", "mrmr")
    text = BASE + ("  later:\n    optional: true\n    features: {name: not-installed-yet}\n"
                   "    selector: {name: mrmrr}\n    classifier: {name: colour-logreg}\n    splits: [cv5]\n")
    msg = _problems(text)
    assert "methods.later.selector.name" in msg and "did you mean 'mrmr'" in msg


def test_paper_protocol_with_a_misspelt_network_is_refused():
    _needs("classifier", "resnext50")
    text = (ROOT / "protocols" / "paper.yaml").read_text().replace("name: resnext50", "name: resnext-fifty")
    msg = _problems(text)
    assert "methods.resnext50.classifier.name" in msg and "did you mean 'resnext50'" in msg


def test_skipping_needs_the_name_to_be_far_from_every_installed_name():
    reg = Registry()
    reg.add(_spec("svm-rbf", _RaisesInInit))
    text = BASE.replace("colour-logreg, params: {C: 0.5}", "svm-rbf") + (
        "  a:\n    optional: true\n    classifier: {name: svm-rbg}\n    splits: [cv5]\n"
        "  b:\n    optional: true\n    classifier: {name: vit-b16}\n    splits: [cv5]\n")
    text = text.replace("\nreports", "")
    protocol = parse_protocol(text + "evaluation: {evaluators: []}\nreports: []\n")
    with pytest.raises(ProtocolError, match="did you mean 'svm-rbf'") as exc:
        check_against_registry(protocol, reg)
    assert "methods.b" not in str(exc.value)  # far from every name: still skipped
    protocol.methods.pop("a")
    assert check_against_registry(protocol, reg) == ["b"]


# ------------------------------------------------------------------ item 2: labels and the scheme
def test_label_map_target_outside_the_scheme_is_an_error_with_did_you_mean():
    msg = _problems(BASE.replace("{path: somewhere}", "{path: somewhere, label_map: {BLA: BLAST, LY: LYT}}"))
    assert ("data.label_map.BLA\n    'BLAST' is not a class code of scheme 'matek2021' "
            "(did you mean 'BLA', blast?)") in msg
    assert "data.label_map.LY" not in msg
    assert "class_scheme\n" in msg and "your own scheme file" in msg and "ABE, ART" in msg


def test_every_code_the_protocol_names_is_checked():
    text = BASE.replace("{path: somewhere}", "{path: somewhere, classes: [BLA, eos]}") + (
        "test_data: {path: elsewhere, label_from: prefix, label_map: {SNE: NEUTRO}}\n"
        "tolerance: {pairs: [[BLA, PMO], [LYT, LYMPH]]}\n"
        "evaluation: {no_call_classes: [ART, NIFF]}\n")
    msg = _problems(text)
    assert "data.classes.1\n    'eos' is not a class code of scheme 'matek2021' (did you mean 'EOS'" in msg
    assert "data.classes.0" not in msg
    assert "test_data.label_map.SNE\n    'NEUTRO'" in msg
    assert "tolerance.pairs.1\n    'LYMPH'" in msg and "tolerance.pairs.0" not in msg
    assert "evaluation.no_call_classes.1\n    'NIFF'" in msg and "did you mean 'NIF'" in msg
    assert msg.count("class_scheme\n") == 1  # the remedy once


def test_own_scheme_file_defines_the_codes(tmp_path):
    scheme = tmp_path / "blast.yaml"
    scheme.write_text("name: mine\nclasses:\n  - {code: BLAST, name: blast cell, lineage: x}\n"
                      "  - {code: LYT, name: lymphocyte, lineage: y}\n")
    text = (BASE.replace("{path: somewhere}", "{path: somewhere, label_map: {BLA: BLAST}}")
            + f"class_scheme: {scheme}\n")
    assert check_against_registry(parse_protocol(text), get_registry()) == []
    msg = _problems(text.replace("BLA: BLAST", "BLA: BLA"))
    assert ("data.label_map.BLA\n    'BLA' is not a class code of scheme 'mine' "
            "(did you mean 'BLAST', blast cell?)") in msg


def test_unknown_class_scheme_is_reported_with_the_others():
    msg = _problems(BASE + "class_scheme: matek2022\nreports: [tabel1]\n")
    assert "class_scheme\n    unknown class scheme 'matek2022'" in msg and "tabel1" in msg


def test_check_labels_names_every_unknown_label_sorted():
    scheme = matek2021()
    check_labels(["BLA", "LYT", "NGS"], scheme, "training set x")  # codes: nothing raised
    with pytest.raises(DataError) as exc:
        check_labels(["zeta", "BLAST", "BLA", "BLAST", "eosinophil"], scheme, "training set /data/bm")
    msg = str(exc.value)
    assert msg.startswith("training set /data/bm: 3 label(s) not in class scheme 'matek2021'")
    lines = msg.splitlines()
    assert [line.split("'")[1] for line in lines[1:4]] == ["BLAST", "eosinophil", "zeta"]
    assert "did you mean 'BLA', blast?" in lines[1] and "did you mean 'EOS', eosinophil?" in lines[2]
    assert "did you mean" not in lines[3] and "label_map" in lines[4]
    assert unknown_labels(["b", "a", "a", "BLA"], scheme) == ["a", "b"]


def test_bundled_samples_and_shipped_protocols_use_codes_of_their_scheme():
    scheme = matek2021()
    check_labels(os.listdir(bundled_sample_path("matek-bm-sample")), scheme, "bundled:matek-bm-sample")
    for path in sorted((ROOT / "protocols").glob("*.yaml")):
        protocol, _ = validate_protocol(path)  # label_map targets checked statically
        assert load_scheme(protocol.class_scheme).name == "matek2021"


# ------------------------------------------------------------------ item 14: digest and changes
@pytest.mark.parametrize("change", [
    ("name: t", "name: renamed"),
    ("version: 1", "version: 1\ndescription: another text"),
    ("version: 1", "version: 1\nn_jobs: 8"),
    ("version: 1", "version: 1\nreports: [table1]"),
    ("version: 1", "version: 1\nevaluation: {evaluators: [summary]}"),
    ("version: 1", "version: 1\ncache_dir: /elsewhere"),
    ("splits: [cv5]\n", "splits: [cv5]\n    artifacts: false\n"),
    ("splits: [cv5]\n", "splits: [cv5]\n    keep_checkpoints: true\n"),
])
def test_result_neutral_changes_keep_the_digest(change):
    old, new = parse_protocol(BASE), parse_protocol(BASE.replace(*change, 1))
    assert new.model_dump() != old.model_dump()
    assert new.digest() == old.digest()
    assert protocol_changes(old.model_dump(mode="json"), new) == []


@pytest.mark.parametrize("change, key", [
    (("version: 1", "version: 1\nseed: 43"), "seed: 42 → 43"),
    (("C: 0.5", "C: 1.0"), "methods.colour.classifier.params.C: 0.5 → 1.0"),
    (("C: 0.5", "C: 0.5, max_iter: 10"), "methods.colour.classifier.params.max_iter: (absent) → 10"),
    (("n_splits: 5", "n_splits: 4"), "splits.cv5.n_splits: 5 → 4"),
    (("{path: somewhere}", "{path: other}"), 'data.path: "somewhere" → "other"'),
    (("splits: [cv5]\n", "splits: [cv5]\n    on_feature_failure: skip\n"),
     'methods.colour.on_feature_failure: "keep" → "skip"'),
    (("version: 1", "version: 1\nnear_duplicates: {threshold: 4}"), "near_duplicates.threshold: 16 → 4"),
    (("version: 1", "version: 1\nsmall_classes: drop"), 'small_classes: "error" → "drop"'),
    (("version: 1", "version: 1\ntolerance: {pairs: none}"), 'tolerance.pairs: "scheme" → "none"'),
])
def test_result_relevant_changes_change_the_digest_and_are_named(change, key):
    old, new = parse_protocol(BASE), parse_protocol(BASE.replace(*change, 1))
    assert new.digest() != old.digest()
    assert protocol_changes(old.model_dump(mode="json"), new) == [key]


def test_protocol_changes_lists_every_change_sorted_and_ignores_neutral_ones():
    old = parse_protocol(BASE).model_dump(mode="json")
    new = parse_protocol(BASE.replace("C: 0.5", "C: 2").replace("version: 1", "version: 1\nseed: 7\nn_jobs: 4")
                         .replace("name: t", "name: u")
                         + "  extra:\n    classifier: {name: colour-logreg}\n    splits: [cv5]\n")
    changes = protocol_changes(old, new)
    assert changes == sorted(changes)
    assert changes[0] == "methods.colour.classifier.params.C: 0.5 → 2"
    assert changes[1].startswith("methods.extra: (absent) → {")
    assert changes[2] == "seed: 42 → 7"
    assert len(changes) == 3


def test_protocol_changes_reads_an_older_protocol_yaml(tmp_path):
    import yaml

    new = parse_protocol(BASE)
    # a protocol.yaml written before a key with a default existed: not a change
    old = yaml.safe_load(yaml.safe_dump(new.model_dump(mode="json")))
    del old["near_duplicates"], old["methods"]["colour"]["on_feature_failure"]
    assert protocol_changes(old, new) == []
    # a key the current model no longer knows is named as removed; the rest still compares
    old["retired_key"] = 1
    old["methods"]["colour"]["retired_too"] = {"a": 1}
    old["splits"]["cv5"]["retired_split_key"] = True  # inside a union (the split kinds)
    assert protocol_changes(old, new) == ['methods.colour.retired_too: {"a": 1} → (absent)',
                                          "retired_key: 1 → (absent)",
                                          "splits.cv5.retired_split_key: true → (absent)"]
    assert protocol_changes(None, new) == ["protocol.yaml: (missing or unreadable)"]
    old["seed"] = "not a seed"  # a value it refuses: compared as it stands
    assert 'seed: "not a seed" → 42' in protocol_changes(old, new)


def test_result_relevant_drops_only_the_neutral_keys():
    dump = parse_protocol(BASE).model_dump(mode="json")
    kept = result_relevant(dump)
    assert "name" in dump and "name" not in kept and "n_jobs" not in kept and "reports" not in kept
    assert "evaluators" not in kept["evaluation"] and "no_call_classes" in kept["evaluation"]
    assert "artifacts" not in kept["methods"]["colour"] and "classifier" in kept["methods"]["colour"]
    assert "name" in dump  # the input is not modified
    assert len(RESULT_NEUTRAL_KEYS) == 10  # + comparisons (issue 11), compute (issue 9)
