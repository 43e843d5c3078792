"""What a third-party plugin's own test suite looks like: the conformance kit on its components."""

from cytocompare.testing import parametrize_with_checks
from cytocompare_example.classifier import ColourLogReg
from cytocompare_example.features import ColourStatistics


@parametrize_with_checks([ColourLogReg(max_iter=200), ColourStatistics()])
def test_conformance(component, check):
    check(component)


def test_installed_through_entry_point():
    from cytocompare.plugins import build_registry, make_plugin_manager

    spec = build_registry(make_plugin_manager()).get("classifier", "colour-logreg")
    assert spec.distribution == "cytocompare-example"
    assert spec.plugin == "example"
