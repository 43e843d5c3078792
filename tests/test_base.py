import pickle

import numpy as np
import pytest

from cytocompare import BaseComponent, NotFittedError, check_is_fitted, clone
from cytocompare.pipeline import Pipeline
from cytocompare.testing import make_tiny_features, make_tiny_images
from cytocompare_example.classifier import ColourLogReg
from cytocompare_example.features import ColourStatistics
from tests.plugins.dummy import MajorityClassifier


class LR(BaseComponent):
    input = "features"

    def __init__(self, C=1.0):
        self.C = C

    def fit(self, X, y):
        from sklearn.linear_model import LogisticRegression

        self.m_ = LogisticRegression(C=self.C, max_iter=500).fit(X, y)
        self.classes_ = self.m_.classes_
        return self

    def predict(self, X):
        return self.m_.predict(X)


class Bad(BaseComponent):
    def __init__(self, value=1):
        self.value = value * 2  # modifies its parameter: clone must refuse


def test_get_set_params_and_nested():
    p = Pipeline(features=ColourStatistics(hue_bins=4), classifier=MajorityClassifier())
    params = p.get_params()
    assert params["features__hue_bins"] == 4
    p.set_params(features__hue_bins=6)
    assert p.features.hue_bins == 6
    with pytest.raises(ValueError, match="valid parameters"):
        p.set_params(nonsense=1)


def test_clone_is_unfitted_and_equal():
    c = ColourLogReg(C=3.0).fit(make_tiny_images(n_per_class=4), make_tiny_images(n_per_class=4).labels)
    new = clone(c)
    assert new.get_params() == c.get_params()
    assert not hasattr(new, "model_")


def test_clone_refuses_modifying_init():
    with pytest.raises(RuntimeError, match="modifies parameter 'value'"):
        clone(Bad(3))


def test_not_fitted():
    with pytest.raises(NotFittedError):
        check_is_fitted(MajorityClassifier())


def test_pipeline_features_path_equals_image_path():
    images = make_tiny_images(n_per_class=6)
    y = images.labels
    p = Pipeline(features=ColourStatistics(), classifier=LR())
    a = clone(p).fit(images, y).predict(images)
    F = ColourStatistics().transform(images)
    b = clone(p).fit_features(F, y).predict_features(F)
    assert np.array_equal(a, b)
    assert np.array_equal(pickle.loads(pickle.dumps(clone(p).fit(images, y))).predict(images), a)


def test_pipeline_rejects_wrong_input_chain():
    X, y = make_tiny_features()
    with pytest.raises(ValueError, match="takes images"):
        Pipeline(features=ColourStatistics(), classifier=ColourLogReg()).fit_features(X, y)
