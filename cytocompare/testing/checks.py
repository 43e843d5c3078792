"""The checks of the conformance kit. Each check states one invariant in its docstring.

Which checks apply depends on the protocol a component satisfies (classifier on features or on
images, feature extractor, feature selector) and on its tags (``deterministic``).
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import numpy as np

from cytocompare.base import clone
from cytocompare.errors import NotFittedError
from cytocompare.images import ImageSet
from cytocompare.protocols import Classifier, FeatureExtractor, FeatureSelector
from cytocompare.testing.datasets import make_tiny_features, make_tiny_images

Check = Callable[[Any], None]


class SkipCheck(Exception):
    """Raised by a check that does not apply to a component (reported as 'skipped')."""


# ---------------------------------------------------------------- data helpers
def _data(component: Any, seed: int = 0, n_per_class: int = 12) -> tuple[Any, np.ndarray]:
    if getattr(component, "input", "features") == "images":
        images = make_tiny_images(n_per_class=n_per_class, seed=seed)
        return images, images.labels
    return make_tiny_features(n_per_class=n_per_class, seed=seed)


def _take(X: Any, idx: np.ndarray) -> Any:
    return X.subset(idx) if isinstance(X, ImageSet) else X[idx]


def _is_deterministic(component: Any) -> bool:
    return bool(getattr(component, "tags", {}).get("deterministic", False))


# ---------------------------------------------------------------- generic checks
def check_cloneable(component: Any) -> None:
    """``clone`` gives an unfitted copy whose parameters equal the original's."""
    new = clone(component)
    assert type(new) is type(component)
    a, b = component.get_params(deep=False), new.get_params(deep=False)
    assert a.keys() == b.keys(), f"clone changed parameter names: {a.keys()} vs {b.keys()}"
    for k in a:
        assert repr(a[k]) == repr(b[k]), f"clone changed parameter {k!r}: {a[k]!r} vs {b[k]!r}"


def check_get_set_params_roundtrip(component: Any) -> None:
    """``set_params(**get_params())`` changes nothing, and ``__init__`` stores parameters unchanged."""
    params = component.get_params(deep=False)
    new = clone(component).set_params(**params)
    assert repr(new.get_params(deep=False)) == repr(params)
    for name, value in params.items():
        assert getattr(component, name) is value or repr(getattr(component, name)) == repr(value)


def check_no_fitted_attributes_in_init(component: Any) -> None:
    """A fresh component has no public attribute ending in ``_`` (fitted state is set by fit)."""
    fresh = clone(component)
    fitted = [k for k in vars(fresh) if k.endswith("_") and not k.startswith("_")]
    assert not fitted, f"__init__ sets fitted-looking attributes: {fitted}"


# ---------------------------------------------------------------- classifier checks
def check_classifier_protocol(clf: Any) -> None:
    """The component satisfies the Classifier protocol and declares its input type."""
    assert isinstance(clf, Classifier), "missing fit/predict/get_params/set_params"
    assert getattr(clf, "input", None) in ("features", "images"), "class attribute 'input' must be 'features' or 'images'"


def check_not_fitted_raises(clf: Any) -> None:
    """``predict`` before ``fit`` raises NotFittedError (an AttributeError)."""
    X, _ = _data(clf)
    try:
        clone(clf).predict(_take(X, np.arange(3)))
    except (NotFittedError, AttributeError):
        return
    raise AssertionError("predict before fit did not raise NotFittedError")


def check_fit_returns_self(clf: Any) -> None:
    """``fit`` returns the component itself."""
    X, y = _data(clf)
    c = clone(clf)
    assert c.fit(X, y) is c


def check_classes_attribute(clf: Any) -> None:
    """``classes_`` is the sorted unique array of the (string) training labels."""
    X, y = _data(clf)
    c = clone(clf).fit(X, y)
    assert [str(v) for v in c.classes_] == sorted(set(y.tolist())), f"classes_ = {list(c.classes_)}"


def check_predict_shape_and_domain(clf: Any) -> None:
    """``predict`` returns one label per input, each one of ``classes_``."""
    X, y = _data(clf)
    c = clone(clf).fit(X, y)
    pred = np.asarray(c.predict(X))
    assert pred.shape == (len(y),), f"predict returned shape {pred.shape}, expected ({len(y)},)"
    assert set(pred.astype(str).tolist()) <= set(map(str, c.classes_))


def check_predict_proba(clf: Any) -> None:
    """If present, ``predict_proba`` has one column per class, rows summing to 1, argmax = predict."""
    if not hasattr(clf, "predict_proba"):
        raise SkipCheck("no predict_proba")
    X, y = _data(clf)
    c = clone(clf).fit(X, y)
    try:
        proba = np.asarray(c.predict_proba(X))
    except AttributeError as exc:  # e.g. an SVC built without probability=True
        raise SkipCheck(f"predict_proba unavailable: {exc}") from None
    assert proba.shape == (len(y), len(c.classes_)), f"shape {proba.shape}"
    assert np.all(np.isfinite(proba)) and np.all(proba >= -1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-4)


def check_predict_order_invariance(clf: Any) -> None:
    """Predicting a permuted set gives the permuted predictions (no batch effects)."""
    X, y = _data(clf)
    c = clone(clf).fit(X, y)
    perm = np.random.default_rng(1).permutation(len(y))
    a = np.asarray(c.predict(X))[perm]
    b = np.asarray(c.predict(_take(X, perm)))
    assert np.array_equal(a, b), "predictions depend on the order or batch composition of the inputs"


def check_random_state_reproducible(clf: Any) -> None:
    """Deterministic components: two fits with the same parameters predict identically."""
    if not _is_deterministic(clf):
        raise SkipCheck("tag deterministic is False")
    X, y = _data(clf)
    a = clone(clf).fit(X, y).predict(X)
    b = clone(clf).fit(X, y).predict(X)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def check_refit_independent(clf: Any) -> None:
    """Fitting on fold B after fold A equals a fresh fit on fold B (no state leaks across folds)."""
    if not _is_deterministic(clf):
        raise SkipCheck("tag deterministic is False")
    XA, yA = _data(clf, seed=1)
    XB, yB = _data(clf, seed=2)
    reused = clone(clf).fit(XA, yA).fit(XB, yB).predict(XB)
    fresh = clone(clf).fit(XB, yB).predict(XB)
    assert np.array_equal(np.asarray(reused), np.asarray(fresh))


def check_learns_trivial_task(clf: Any) -> None:
    """On trivially separable synthetic data, held-out accuracy is above 0.9."""
    Xtr, ytr = _data(clf, seed=3, n_per_class=16)
    Xte, yte = _data(clf, seed=4, n_per_class=8)
    pred = np.asarray(clone(clf).fit(Xtr, ytr).predict(Xte)).astype(str)
    acc = float(np.mean(pred == yte))
    assert acc > 0.9, f"held-out accuracy {acc:.2f} on a trivially separable task"


def check_tiny_class(clf: Any) -> None:
    """Fitting works when one class has only 2 examples (rare classes such as ABE exist)."""
    if getattr(clf, "input", "features") == "images":
        images = make_tiny_images(n_per_class=8, counts={"CCC": 2}, seed=5)
        X, y = images, images.labels
    else:
        X, y = make_tiny_features(n_per_class=8, seed=5)
        keep = np.concatenate([np.flatnonzero(y != "CCC"), np.flatnonzero(y == "CCC")[:2]])
        X, y = X[keep], y[keep]
    c = clone(clf).fit(X, y)
    assert "CCC" in [str(v) for v in c.classes_]
    assert len(np.asarray(c.predict(X))) == len(y)


def check_pickle_roundtrip(clf: Any) -> None:
    """A fitted component survives pickling and predicts identically afterwards."""
    X, y = _data(clf)
    c = clone(clf).fit(X, y)
    before = np.asarray(c.predict(X))
    after = np.asarray(pickle.loads(pickle.dumps(c)).predict(X))
    assert np.array_equal(before, after)


# ---------------------------------------------------------------- extractor checks
def check_extractor_protocol(ext: Any) -> None:
    """The component satisfies the FeatureExtractor protocol."""
    assert isinstance(ext, FeatureExtractor), "missing fit/transform/get_feature_names_out"


def check_extractor_output(ext: Any) -> None:
    """``transform`` gives finite float32 rows, one column per unique feature name."""
    images = make_tiny_images(n_per_class=3, seed=6)
    e = clone(ext).fit(images)
    F = np.asarray(e.transform(images))
    names = list(e.get_feature_names_out())
    assert F.dtype == np.float32, f"dtype {F.dtype}, expected float32"
    assert F.shape == (len(images), len(names)), f"shape {F.shape} vs {len(names)} names"
    assert len(set(names)) == len(names), "feature names are not unique"
    assert np.all(np.isfinite(F)), "non-finite feature values"


def check_extractor_per_image(ext: Any) -> None:
    """Each row depends only on its own image (needed for caching by image content)."""
    images = make_tiny_images(n_per_class=3, seed=7)
    e = clone(ext).fit(images)
    whole = np.asarray(e.transform(images))
    part = np.asarray(e.transform(images.subset(np.arange(2, 5))))
    np.testing.assert_allclose(part, whole[2:5], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- selector checks
def check_selector_protocol(sel: Any) -> None:
    """The component satisfies the FeatureSelector protocol."""
    assert isinstance(sel, FeatureSelector), "missing fit/transform/get_support"


def check_selector_output(sel: Any) -> None:
    """The selection is a set of distinct valid column indices and ``transform`` keeps them."""
    X, y = make_tiny_features(n_per_class=15, n_features=12, seed=8)
    s = clone(sel).fit(X, y)
    idx = np.asarray(s.get_support(indices=True))
    assert len(idx) == len(set(idx.tolist())) and len(idx) > 0
    assert idx.min() >= 0 and idx.max() < X.shape[1]
    np.testing.assert_array_equal(np.asarray(s.transform(X)), X[:, idx])


def check_selector_uses_labels_of_fit_only(sel: Any) -> None:
    """Refitting on other rows gives the same result as a fresh fit (no memory of earlier data)."""
    XA, yA = make_tiny_features(n_per_class=15, n_features=12, seed=9)
    XB, yB = make_tiny_features(n_per_class=15, n_features=12, seed=10)
    reused = clone(sel).fit(XA, yA).fit(XB, yB).get_support(indices=True)
    fresh = clone(sel).fit(XB, yB).get_support(indices=True)
    np.testing.assert_array_equal(reused, fresh)


GENERIC = (check_cloneable, check_get_set_params_roundtrip, check_no_fitted_attributes_in_init)
CLASSIFIER = (check_classifier_protocol, check_not_fitted_raises, check_fit_returns_self, check_classes_attribute,
              check_predict_shape_and_domain, check_predict_proba, check_predict_order_invariance,
              check_random_state_reproducible, check_refit_independent, check_learns_trivial_task,
              check_tiny_class, check_pickle_roundtrip)
EXTRACTOR = (check_extractor_protocol, check_extractor_output, check_extractor_per_image)
SELECTOR = (check_selector_protocol, check_selector_output, check_selector_uses_labels_of_fit_only)


def component_checks(component: Any, *, expected_failed_checks: dict[str, str] | None = None
                     ) -> Iterator[tuple[Any, Callable[[Any], None]]]:
    """Yield ``(component, check)`` pairs for every check that applies to ``component``."""
    if hasattr(component, "predict"):
        specific: Iterable[Check] = CLASSIFIER
    elif hasattr(component, "get_feature_names_out"):
        specific = EXTRACTOR
    elif hasattr(component, "get_support"):
        specific = SELECTOR
    else:
        raise TypeError(f"{type(component).__name__} is neither a classifier, a feature extractor nor a selector")
    for check in (*GENERIC, *specific):
        yield component, partial(check)


def _name(check: Callable[..., Any]) -> str:
    return getattr(check, "func", check).__name__


def check_component(component: Any, *, expected_failed_checks: dict[str, str] | None = None,
                    on_fail: str | None = "raise") -> list[dict[str, Any]]:
    """Run every applicable check. Returns one dict per check: check_name, status, reason.

    ``on_fail="raise"`` raises the first unexpected failure; ``None`` only reports.
    """
    expected = expected_failed_checks or {}
    results = []
    for comp, check in component_checks(component):
        name = _name(check)
        try:
            check(comp)
        except SkipCheck as exc:
            results.append({"check_name": name, "status": "skipped", "reason": str(exc)})
        except Exception as exc:
            if name in expected:
                results.append({"check_name": name, "status": "xfail", "reason": expected[name]})
                continue
            results.append({"check_name": name, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                            "exception": traceback.format_exc()})
            if on_fail == "raise":
                raise
        else:
            status = "xpass" if name in expected else "passed"
            results.append({"check_name": name, "status": status, "reason": ""})
    return results


def parametrize_with_checks(components: list[Any], *, expected_failed_checks: Callable[[Any], dict[str, str]] | None = None
                            ) -> Any:
    """pytest decorator: one test per (component, check), ids like ``ColourLogReg()-check_fit_returns_self``."""
    import pytest

    params = []
    for component in components:
        expected = expected_failed_checks(component) if expected_failed_checks else {}
        for comp, check in component_checks(component):
            name = _name(check)
            marks = [pytest.mark.xfail(reason=expected[name], strict=True)] if name in expected else []
            params.append(pytest.param(comp, _skipping(check), id=f"{type(comp).__name__}-{name}", marks=marks))
    return pytest.mark.parametrize("component, check", params)


def _skipping(check: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(component: Any) -> None:
        import pytest

        try:
            check(component)
        except SkipCheck as exc:
            pytest.skip(str(exc))

    run.__name__ = _name(check)
    return run
