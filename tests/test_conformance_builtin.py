"""scikit-learn's test_common: every registered component (core and installed plugins) passes the kit
with its ``fast_params``. A component declares known gaps in ``tags["expected_failed_checks"]``."""

import pytest

from cytocompare.plugins import build_registry, make_plugin_manager
from cytocompare.testing.checks import _name, _skipping, component_checks

_REGISTRY = build_registry(make_plugin_manager())
_KINDS = ("classifier", "feature_extractor", "feature_selector")


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
        expected = spec.tags.get("expected_failed_checks", {})
        for comp, check in component_checks(component):
            name = _name(check)
            marks = [pytest.mark.xfail(reason=expected[name], strict=True)] if name in expected else []
            out.append(pytest.param(comp, _skipping(check), id=f"{spec.name}-{name}", marks=marks))
    return out


@pytest.mark.parametrize("component, check", _params())
def test_registered_component_conformance(component, check):
    check(component)
