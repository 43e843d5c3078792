from pathlib import Path

import pytest

from cytocompare.config import check_against_registry, load_protocol, parse_protocol, validate_protocol
from cytocompare.errors import ProtocolError
from cytocompare.plugins import get_registry

ROOT = Path(__file__).parents[1]

GOOD = """
version: 1
name: t
data: {path: somewhere}
splits:
  cv5: {kind: kfold, n_splits: 5}
methods:
  colour:
    classifier: {name: colour-logreg, params: {C: 0.5}}
    splits: [cv5]
"""


def test_good_protocol_validates():
    p = parse_protocol(GOOD)
    assert check_against_registry(p, get_registry()) == []
    assert p.splits["cv5"].n_splits == 5
    assert p.digest() == parse_protocol(GOOD).digest()


@pytest.mark.parametrize("path", sorted((ROOT / "protocols").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_protocols_validate(path):
    protocol, skipped = validate_protocol(path)
    assert protocol.methods
    assert set(skipped) <= {m for m, s in protocol.methods.items() if s.optional}


def test_malformed_yaml():
    with pytest.raises(ProtocolError, match="not valid YAML"):
        parse_protocol("name: [unclosed\n  splits: {", "broken.yaml")


def test_unknown_key_is_reported_with_location():
    with pytest.raises(ProtocolError) as exc:
        parse_protocol(GOOD.replace("{path: somewhere}", "{path: somewhere, layuot: flat}") + "sead: 3\n")
    assert "sead" in str(exc.value) and "unknown key" in str(exc.value)
    # each misspelt key is named at its place in the protocol, top level and nested
    assert "\nsead\n    unknown key" in str(exc.value)
    assert "\ndata.layuot\n    unknown key" in str(exc.value)


def test_split_switches_are_keys_with_the_old_behaviour_as_default():
    p = parse_protocol(GOOD)
    assert p.splits["cv5"].stratify and p.splits["cv5"].shuffle
    # written only when switched off, so protocols older than these keys keep their digest
    assert p.model_dump()["splits"]["cv5"] == {"kind": "kfold", "n_splits": 5}
    off = parse_protocol(GOOD.replace("n_splits: 5}", "n_splits: 5, shuffle: false}"))
    assert off.model_dump()["splits"]["cv5"] == {"kind": "kfold", "n_splits": 5, "shuffle": False}
    assert off.digest() != p.digest()
    with pytest.raises(ProtocolError, match="unknown key"):  # holdout always shuffles
        parse_protocol(GOOD.replace("{kind: kfold, n_splits: 5}", "{kind: holdout, shuffle: false}"))
    assert parse_protocol(GOOD.replace("{kind: kfold, n_splits: 5}", "{kind: holdout}")).splits["cv5"].test_size == 0.3


def test_misspelt_component_lists_choices():
    with pytest.raises(ProtocolError) as exc:
        check_against_registry(parse_protocol(GOOD.replace("colour-logreg", "colour-logerg")), get_registry())
    msg = str(exc.value)
    assert "methods.colour.classifier.name" in msg
    assert "did you mean 'colour-logreg'" in msg
    assert "installed:" in msg


def test_misspelt_parameter_lists_valid_parameters():
    with pytest.raises(ProtocolError) as exc:
        check_against_registry(parse_protocol(GOOD.replace("C: 0.5", "c_value: 0.5")), get_registry())
    msg = str(exc.value)
    assert "unknown parameter 'c_value'" in msg and "valid parameters" in msg and "max_iter" in msg


def test_all_problems_reported_at_once():
    text = GOOD.replace("colour-logreg", "nope") + "reports: [tabel1]\n"
    with pytest.raises(ProtocolError) as exc:
        check_against_registry(parse_protocol(text), get_registry())
    assert "nope" in str(exc.value) and "tabel1" in str(exc.value) and "did you mean 'table1'" in str(exc.value)


def test_unknown_split_reference_and_external_without_test_data():
    text = GOOD.replace("splits: [cv5]", "splits: [cv10]")
    with pytest.raises(ProtocolError, match="unknown split 'cv10'"):
        parse_protocol(text)
    text = GOOD.replace("cv5: {kind: kfold, n_splits: 5}", "ext: {kind: external}").replace("[cv5]", "[ext]")
    with pytest.raises(ProtocolError, match="test_data"):
        parse_protocol(text)


def test_invalid_values_are_rejected():
    with pytest.raises(ProtocolError, match="n_splits"):
        parse_protocol(GOOD.replace("n_splits: 5", "n_splits: 1"))
    with pytest.raises(ProtocolError, match="kind"):
        parse_protocol(GOOD.replace("kind: kfold", "kind: kfoldd"))


def test_optional_method_with_missing_plugin_is_skipped_not_an_error():
    text = GOOD + "  later:\n    optional: true\n    classifier: {name: not-installed-yet}\n    splits: [cv5]\n"
    assert check_against_registry(parse_protocol(text), get_registry()) == ["later"]


def test_classifier_input_chain_checked():
    text = GOOD.replace("classifier: {name: colour-logreg, params: {C: 0.5}}",
                        "features: {name: colour-stats}\n    classifier: {name: colour-logreg}")
    with pytest.raises(ProtocolError, match="takes images"):
        check_against_registry(parse_protocol(text), get_registry())


def test_missing_file():
    with pytest.raises(ProtocolError, match="not found"):
        load_protocol("does/not/exist.yaml")


@pytest.mark.parametrize(("key", "value", "bad", "message"), [
    ("colour_normalize", "reinhard", "zscore", "only test_data can be colour-normalised"),
    ("feature_alignment", "standardize", "zscore", "only test_data's features can be aligned"),
    ("scale", "1.3", "-2", "only test_data can be rescaled"),
])
def test_external_matching_keys_are_for_test_data_only_and_checked(key, value, bad, message):
    """colour_normalize, feature_alignment and scale map the external set onto the training set:
    an error under data, and a bad value under test_data names the key."""
    text = ("version: 1\nname: t\ndata: {path: x, KEY: VALUE}\nsplits: {cv: {kind: kfold}}\n"
            "methods: {m: {classifier: {name: colour-logreg}, splits: [cv]}}\n")
    with pytest.raises(ProtocolError, match=message):
        parse_protocol(text.replace("KEY: VALUE", f"{key}: {value}"))
    with pytest.raises(ProtocolError, match=key):
        parse_protocol(text.replace("data: {path: x, KEY: VALUE}", f"data: {{path: x}}\ntest_data: {{path: y, {key}: {bad}}}"))
    assert getattr(parse_protocol(text.replace("data: {path: x, KEY: VALUE}", f"data: {{path: x}}\n"
                                               f"test_data: {{path: y, {key}: {value}}}")).test_data, key) is not None
