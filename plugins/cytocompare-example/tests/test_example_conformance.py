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


def test_scikit_learn_estimators_on_images():
    """ClassifierMixin's ``score`` and TransformerMixin's ``fit_transform`` work on an ImageSet."""
    import numpy as np
    from sklearn.base import is_classifier

    from cytocompare.testing import make_tiny_images

    images = make_tiny_images(n_per_class=6)
    clf = ColourLogReg(max_iter=200).fit(images, images.labels)
    assert is_classifier(clf)
    assert clf.score(images, images.labels) == np.mean(clf.predict(images) == images.labels)
    np.testing.assert_array_equal(ColourStatistics().fit_transform(images), ColourStatistics().transform(images))
