"""scikit-learn's test_common: every registered component (core and installed plugins) passes the kit
with its ``fast_params``: scikit-learn's checks (all of ``check_estimator`` for feature input) and
cytocompare's (image input, determinism, the runner contract). Known gaps are declared below, by
check name and with the reason; the second half tests the kit itself on broken components."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from sklearn.base import ClassifierMixin

from cytocompare.base import BaseComponent, check_is_fitted
from cytocompare.plugins import build_registry, make_plugin_manager
from cytocompare.protocols import Tags
from cytocompare.testing import check_component
from cytocompare.testing.checks import (
    ExpectedFailure,
    UnexpectedPass,
    _name,
    as_pytest,
    check_checkpointing_parameter,
    check_fit_report,
    check_predict_proba,
    check_random_state_reproducible,
    check_write_artifacts,
    component_checks,
)

_REGISTRY = build_registry(make_plugin_manager())
_KINDS = ("classifier", "feature_extractor", "feature_selector")

#: (kind, registered name) -> {check name: why it is expected to fail}; empty: no known gaps
EXPECTED_FAILED_CHECKS: dict[tuple[str, str], dict[str, str]] = {}


def _reraise(exc: Exception) -> None:
    raise exc


def _params():
    out = []
    for spec in _REGISTRY:
        if spec.kind not in _KINDS:
            continue
        try:
            component = spec.create(**spec.fast_params)
        except ImportError as exc:  # a plugin whose optional backend is missing
            out.append(pytest.param(None, None, id=f"{spec.name}-import",
                                    marks=pytest.mark.skip(reason=f"cannot import: {exc}")))
            continue
        except Exception as exc:  # noqa: BLE001 - one failing test for this component, not a collection error
            out.append(pytest.param(exc, _reraise, id=f"{spec.name}-create"))
            continue
        expected = EXPECTED_FAILED_CHECKS.get((spec.kind, spec.name), {})
        for comp, check in component_checks(component, expected_failed_checks=expected):
            out.append(pytest.param(comp, as_pytest(check), id=f"{spec.name}-{_name(check)}"))
    return out


@pytest.mark.filterwarnings("ignore:k=.* exceeds:UserWarning")  # mRMR's k clamped on 2-10 columns
@pytest.mark.parametrize("component, check", _params())
def test_registered_component_conformance(component, check):
    check(component)


# ---------------------------------------------------------------- the kit catches what it promises
class _Majority(ClassifierMixin, BaseComponent):
    """A minimal correct features classifier; the broken variants below change one thing each."""

    input: ClassVar[str] = "features"
    tags: ClassVar[Tags] = Tags(deterministic=True)

    def __init__(self, strategy: str = "most_frequent") -> None:
        self.strategy = strategy

    def fit(self, X, y):
        self.classes_, counts = np.unique(np.asarray(y), return_counts=True)
        self.majority_ = self.classes_[np.argmax(counts)]
        return self

    def predict(self, X):
        check_is_fitted(self, "majority_")
        return np.full(len(X), self.majority_)

    def predict_proba(self, X):
        check_is_fitted(self, "majority_")
        proba = np.zeros((len(X), len(self.classes_)))
        proba[:, list(self.classes_).index(self.majority_)] = 1.0
        return proba


class _ProbaDisagrees(_Majority):
    def predict_proba(self, X):
        return np.roll(super().predict_proba(X), 1, axis=1)  # argmax is another class than predict's


class _ProbaRaisesInside(_Majority):
    def predict_proba(self, X):
        return self.model_.predict_proba(X)  # AttributeError inside: not "no predict_proba"


class _Random(_Majority):
    """Claims determinism but predicts at random."""

    def predict(self, X):
        return np.random.default_rng().choice(self.classes_, len(X))


def test_predict_proba_argmax_must_equal_predict():
    check_predict_proba(_Majority())
    with pytest.raises(AssertionError, match="argmax of predict_proba differs from predict"):
        check_predict_proba(_ProbaDisagrees())


def test_attribute_error_inside_predict_proba_fails_not_skips():
    with pytest.raises(AttributeError, match="model_"):
        check_predict_proba(_ProbaRaisesInside())
    results = check_component(_ProbaRaisesInside(), on_fail=None, sklearn_checks=False)
    assert {r["check_name"]: r["status"] for r in results}["check_predict_proba"] == "failed"


def test_determinism_is_read_from_the_tags():
    with pytest.raises(AssertionError):
        check_random_state_reproducible(_Random())

    class _HonestRandom(_Random):
        tags: ClassVar[Tags] = Tags(deterministic=False)

    results = check_component(_HonestRandom(), on_fail=None, sklearn_checks=False)
    assert {r["check_name"]: r["status"] for r in results}["check_random_state_reproducible"] == "skipped"


def test_expected_failed_checks_are_honoured_and_strict():
    why = "argmax of this toy's probabilities is rolled on purpose"
    results = {r["check_name"]: r for r in check_component(
        _ProbaDisagrees(), expected_failed_checks={"check_predict_proba": why}, on_fail=None, sklearn_checks=False)}
    assert results["check_predict_proba"]["status"] == "xfail" and why in results["check_predict_proba"]["reason"]
    # a declared failure that passes is a failure: the gap was fixed, so the declaration must go
    results = {r["check_name"]: r for r in check_component(
        _Majority(), expected_failed_checks={"check_predict_proba": why}, on_fail=None, sklearn_checks=False)}
    assert results["check_predict_proba"]["status"] == "failed"
    assert "UnexpectedPass" in results["check_predict_proba"]["reason"]
    pairs = dict((_name(c), c) for _, c in component_checks(
        _ProbaDisagrees(), expected_failed_checks={"check_predict_proba": why}, sklearn_checks=False))
    with pytest.raises(ExpectedFailure):
        pairs["check_predict_proba"](_ProbaDisagrees())
    pairs = dict((_name(c), c) for _, c in component_checks(
        _Majority(), expected_failed_checks={"check_predict_proba": why}, sklearn_checks=False))
    with pytest.raises(UnexpectedPass):
        pairs["check_predict_proba"](_Majority())
    with pytest.raises(ValueError, match="do not apply"):
        list(component_checks(_Majority(), expected_failed_checks={"check_no_such_thing": "typo"}))


def test_sklearn_checks_run_for_feature_input_and_catch_sklearn_mistakes():
    names = [_name(c) for _, c in component_checks(_Majority())]
    assert "check_estimators_unfitted" in names and "check_classifiers_train" in names
    results = {r["check_name"]: r["status"] for r in check_component(_Majority(), on_fail=None)}
    # the majority rule cannot learn scikit-learn's blobs: the kit says so instead of passing
    assert results["check_classifiers_train"] == "failed"
    assert results["check_estimators_unfitted"] == "passed"


# ---------------------------------------------------------------- runner-contract checks
class _Checkpointing(_Majority):
    def __init__(self, strategy: str = "most_frequent", checkpoint_dir: str | None = None) -> None:
        self.strategy = strategy
        self.checkpoint_dir = checkpoint_dir


class _CheckpointingNotAParameter(_Majority):
    checkpoint_dir = None  # an attribute the runner cannot set through set_params


class _CheckpointingWrongDefault(_Majority):
    def __init__(self, checkpoint_dir: str | None = "ckpt") -> None:
        self.checkpoint_dir = checkpoint_dir


def test_checkpointing_contract():
    names = [_name(c) for _, c in component_checks(_Checkpointing(), sklearn_checks=False)]
    assert {"check_checkpointing_parameter", "check_checkpointing_fit"} <= set(names)
    assert "check_checkpointing_parameter" not in [_name(c) for _, c in component_checks(_Majority())]
    check_checkpointing_parameter(_Checkpointing())
    with pytest.raises(AssertionError, match="not an __init__ parameter"):
        check_checkpointing_parameter(_CheckpointingNotAParameter())
    with pytest.raises(AssertionError, match="default to None"):
        check_checkpointing_parameter(_CheckpointingWrongDefault())


class _Artifacts(_Majority):
    def write_artifacts(self, out_dir, images, y_true):
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "a.txt").write_text("x")
        return [out_dir / "a.txt"]


class _ArtifactsMissing(_Artifacts):
    def write_artifacts(self, out_dir, images, y_true):
        return super().write_artifacts(out_dir, images, y_true) + [Path(out_dir) / "never-written.png"]


class _ArtifactsOutside(_Artifacts):
    def write_artifacts(self, out_dir, images, y_true):
        stray = Path(out_dir).parent / "stray.txt"
        super().write_artifacts(out_dir, images, y_true)
        stray.write_text("x")
        return [stray]


def test_write_artifacts_contract():
    check_write_artifacts(_Artifacts())
    with pytest.raises(AssertionError, match="does not exist"):
        check_write_artifacts(_ArtifactsMissing())
    with pytest.raises(AssertionError, match="outside out_dir"):
        check_write_artifacts(_ArtifactsOutside())


class _Reports(_Majority):
    def fit_report(self):
        check_is_fitted(self, "majority_")
        return {"variant": "majority", "best_params": {"strategy": self.strategy}}


class _ReportsNumpy(_Reports):
    def fit_report(self):
        return {**super().fit_report(), "n": np.int64(3)}


class _ReportsBeforeFit(_Majority):
    def fit_report(self):
        return {"variant": "majority"}


class _ReportsTuple(_Reports):
    def fit_report(self):
        return {**super().fit_report(), "shape": (1, 2)}


def test_fit_report_contract():
    check_fit_report(_Reports())
    with pytest.raises(AssertionError, match="not JSON-serialisable"):
        check_fit_report(_ReportsNumpy())
    with pytest.raises(AssertionError, match="before fit did not raise"):
        check_fit_report(_ReportsBeforeFit())
    with pytest.raises(AssertionError, match="round trip"):
        check_fit_report(_ReportsTuple())
