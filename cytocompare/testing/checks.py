"""The checks of the conformance kit. Each check states one invariant in its docstring.

A component is a scikit-learn estimator (:class:`cytocompare.base.BaseComponent`), so the kit
starts from scikit-learn's own checks: all of ``check_estimator`` for components that take a
feature matrix (classifiers with ``input = "features"``, selectors), and the data-free ones
(cloning, parameters, tags) for components that take images. The checks defined here are what
scikit-learn does not check: image input, string class codes, determinism (the ``deterministic``
tag), and the runner contract (:mod:`cytocompare.protocols`: ``Checkpointing``,
``WritesArtifacts``, ``ReportsFit``).

Known gaps are declared by name, ``expected_failed_checks={"check_name": "why"}``: such a check
must fail (reported ``xfail``); if it passes, that is a failure too, so a fixed gap is removed
from the list instead of hiding the next regression.
"""

from __future__ import annotations

import inspect
import json
import pickle
import tempfile
import traceback
import unittest
from collections.abc import Callable, Iterable, Iterator
from functools import partial, wraps
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils import estimator_checks as sk_checks

from cytocompare.base import clone, get_tags
from cytocompare.errors import NotFittedError
from cytocompare.images import ImageSet
from cytocompare.protocols import (
    Checkpointing,
    Classifier,
    FeatureExtractor,
    FeatureSelector,
    ReportsFit,
    WritesArtifacts,
)
from cytocompare.testing.datasets import make_tiny_features, make_tiny_images

Check = Callable[[Any], None]


class SkipCheck(Exception):
    """Raised by a check that does not apply to a component (reported as 'skipped')."""


class ExpectedFailure(Exception):
    """A check listed in ``expected_failed_checks`` failed, as declared (reported as 'xfail')."""


class UnexpectedPass(AssertionError):
    """A check listed in ``expected_failed_checks`` passed: remove it from the list."""


# ---------------------------------------------------------------- data helpers
def _takes_images(component: Any) -> bool:
    """Classifiers say so with ``input``; extractors always take images; selectors never do."""
    if hasattr(component, "get_feature_names_out") and not hasattr(component, "predict"):
        return not hasattr(component, "get_support")
    return getattr(component, "input", "features") == "images"


def _data(component: Any, seed: int = 0, n_per_class: int = 12) -> tuple[Any, np.ndarray]:
    if _takes_images(component):
        images = make_tiny_images(n_per_class=n_per_class, seed=seed)
        return images, images.labels
    return make_tiny_features(n_per_class=n_per_class, seed=seed)


def _take(X: Any, idx: np.ndarray) -> Any:
    return X.subset(idx) if isinstance(X, ImageSet) else X[idx]


def _is_deterministic(component: Any) -> bool:
    return get_tags(component).deterministic


# ---------------------------------------------------------------- generic checks (scikit-learn's)
#: scikit-learn's checks that need no data: they apply to image-input components as well
SKLEARN_DATA_FREE = (
    sk_checks.check_estimator_cloneable,
    sk_checks.check_estimator_repr,
    sk_checks.check_no_attributes_set_in_init,
    sk_checks.check_parameters_default_constructible,
    sk_checks.check_get_params_invariance,
    sk_checks.check_set_params,
    sk_checks.check_do_not_raise_errors_in_init_or_set_params,
    sk_checks.check_mixin_order,
    sk_checks.check_valid_tag_types,
)


def _sklearn_check(check: Callable[[str, Any], None]) -> Check:
    """scikit-learn's ``check(name, estimator)`` as a one-argument check of the same name."""
    @wraps(check)
    def run(component: Any) -> None:
        check(type(component).__name__, component)

    return run


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
    """If present, ``predict_proba`` has one column per class, rows summing to 1, argmax = predict.

    Only a missing method skips: an ``AttributeError`` raised *inside* ``predict_proba`` (e.g. a
    wrapped model built without probabilities) is a failure, since ``hasattr`` promised the method.
    Rows whose top probability is tied are not compared with ``predict``.
    """
    if not hasattr(clf, "predict_proba"):
        raise SkipCheck("no predict_proba")
    X, y = _data(clf)
    c = clone(clf).fit(X, y)
    if not hasattr(c, "predict_proba"):
        raise AssertionError("predict_proba exists before fit but not after it")
    proba = np.asarray(c.predict_proba(X))
    classes = np.asarray(c.classes_)
    assert proba.shape == (len(y), len(classes)), f"shape {proba.shape}"
    assert np.all(np.isfinite(proba)) and np.all(proba >= -1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-4)
    pred = np.asarray(c.predict(X)).astype(str)
    top = proba.max(axis=1)
    unique_top = (proba >= top[:, None] - 1e-12).sum(axis=1) == 1
    from_proba = classes[proba.argmax(axis=1)].astype(str)
    differ = np.flatnonzero(unique_top & (from_proba != pred))
    assert differ.size == 0, (
        f"argmax of predict_proba differs from predict on {differ.size} of {len(y)} rows "
        f"(first: row {differ[:1].tolist()}, proba says {from_proba[differ[:1]].tolist()}, "
        f"predict says {pred[differ[:1]].tolist()})"
    )


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
    if _takes_images(clf):
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


# ---------------------------------------------------------------- runner-contract checks
def check_checkpointing_parameter(clf: Any) -> None:
    """``Checkpointing``: ``checkpoint_dir`` is a constructor parameter defaulting to None, so the
    runner can see it in ``get_params`` and give each fold a folder with ``set_params``."""
    params = inspect.signature(type(clf).__init__).parameters
    assert "checkpoint_dir" in params, (
        "checkpoint_dir is an attribute but not an __init__ parameter: the runner sets it with set_params"
    )
    assert params["checkpoint_dir"].default is None, (
        f"checkpoint_dir must default to None (the runner fills None in), not {params['checkpoint_dir'].default!r}"
    )
    assert "checkpoint_dir" in clf.get_params(deep=False)
    moved = clone(clf).set_params(checkpoint_dir="fold-folder")
    assert moved.checkpoint_dir == "fold-folder" and clone(moved).checkpoint_dir == "fold-folder"


def check_checkpointing_fit(clf: Any) -> None:
    """``Checkpointing``: fitting into a fresh, not yet existing ``checkpoint_dir`` works (the
    runner's folders do not exist before the first fold trains)."""
    X, y = _data(clf)
    with tempfile.TemporaryDirectory() as tmp:
        c = clone(clf).set_params(checkpoint_dir=str(Path(tmp) / "checkpoints" / "fold0"))
        assert c.fit(X, y) is c
        assert len(np.asarray(c.predict(X))) == len(y)


def check_write_artifacts(clf: Any) -> None:
    """``WritesArtifacts``: after fit, ``write_artifacts(out_dir, images, y_true)`` creates
    ``out_dir`` if needed and returns a list of paths that exist, all inside ``out_dir``.

    A missing optional dependency of the artifacts (an ``ImportError``) skips, as in the runner.
    """
    X, y = _data(clf)
    c = clone(clf).fit(X, y)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "artifacts" / "method" / "split"
        try:
            written = c.write_artifacts(out, X, y)
        except ImportError as exc:
            raise SkipCheck(f"artifacts need an optional dependency: {exc}") from None
        assert isinstance(written, list), f"write_artifacts returned {type(written).__name__}, not a list"
        root = out.resolve()
        for path in written:
            path = Path(path)
            assert path.exists(), f"write_artifacts listed {path}, which does not exist"
            assert root in path.resolve().parents, f"write_artifacts wrote {path} outside out_dir {out}"


def check_fit_report(comp: Any) -> None:
    """``ReportsFit``: ``fit_report()`` raises NotFittedError before fit; after it, returns a dict
    with string keys that survives ``json.dumps``/``json.loads`` unchanged (JSON values only)."""
    try:
        clone(comp).fit_report()
    except (NotFittedError, SklearnNotFittedError):
        pass
    else:
        raise AssertionError("fit_report() before fit did not raise NotFittedError")
    X, y = _data(comp)
    report = clone(comp).fit(X, y).fit_report()
    assert isinstance(report, dict), f"fit_report() returned {type(report).__name__}, not a dict"
    assert all(isinstance(k, str) for k in report), f"non-string keys: {list(report)}"
    try:
        text = json.dumps(report)
    except TypeError as exc:
        raise AssertionError(f"fit_report() is not JSON-serialisable: {exc}") from None
    assert json.loads(text) == report, "fit_report() changes in a JSON round trip (tuples? NaN? numpy scalars?)"


# ---------------------------------------------------------------- which checks apply
#: what scikit-learn's ``check_estimator`` already checks for feature input: run on images only
CLASSIFIER_BASICS = (check_not_fitted_raises, check_fit_returns_self, check_predict_shape_and_domain,
                     check_predict_order_invariance, check_pickle_roundtrip)
CLASSIFIER = (check_classifier_protocol, check_classes_attribute, check_predict_proba,
              check_random_state_reproducible, check_refit_independent, check_learns_trivial_task,
              check_tiny_class)
EXTRACTOR = (check_extractor_protocol, check_extractor_output, check_extractor_per_image)
SELECTOR = (check_selector_protocol, check_selector_output, check_selector_uses_labels_of_fit_only)


def _contract_checks(component: Any) -> list[Check]:
    """The runner-contract checks of the optional protocols the component implements."""
    checks: list[Check] = []
    if isinstance(component, Checkpointing):
        checks += [check_checkpointing_parameter, check_checkpointing_fit]
    if isinstance(component, WritesArtifacts):
        checks.append(check_write_artifacts)
    if isinstance(component, ReportsFit):
        checks.append(check_fit_report)
    return checks


def _sklearn_checks(component: Any, *, full: bool) -> Iterator[tuple[Any, Check]]:
    if full:
        # each check is partial(check, name[, options]): called with the estimator alone
        yield from sk_checks.estimator_checks_generator(component, legacy=True)
    else:
        for check in SKLEARN_DATA_FREE:
            yield component, _sklearn_check(check)


def component_checks(component: Any, *, expected_failed_checks: dict[str, str] | None = None,
                     sklearn_checks: bool = True) -> Iterator[tuple[Any, Check]]:
    """Yield ``(component, check)`` pairs for every check that applies to ``component``.

    ``sklearn_checks``: include scikit-learn's checks (all of them for feature input, the data-free
    ones for image input). A check named in ``expected_failed_checks`` is wrapped so that its
    failure raises :class:`ExpectedFailure` and its success :class:`UnexpectedPass`.
    """
    if hasattr(component, "predict"):
        basics = () if sklearn_checks and not _takes_images(component) else CLASSIFIER_BASICS
        specific: Iterable[Check] = (CLASSIFIER[0], *basics, *CLASSIFIER[1:])
    elif hasattr(component, "get_support"):
        specific = SELECTOR
    elif hasattr(component, "get_feature_names_out"):
        specific = EXTRACTOR
    else:
        raise TypeError(f"{type(component).__name__} is neither a classifier, a feature extractor nor a selector")
    expected = expected_failed_checks or {}
    pairs: list[tuple[Any, Check]] = []
    if sklearn_checks:
        pairs += list(_sklearn_checks(component, full=not _takes_images(component)))
    pairs += [(component, check) for check in (*specific, *_contract_checks(component))]
    unknown = set(expected) - {_name(check) for _, check in pairs}
    if unknown:
        raise ValueError(f"expected_failed_checks names checks that do not apply to "
                         f"{type(component).__name__}: {sorted(unknown)}")
    for comp, check in pairs:
        name = _name(check)
        yield comp, (_expecting_failure(check, expected[name]) if name in expected else check)


def _name(check: Callable[..., Any]) -> str:
    while isinstance(check, partial):
        check = check.func
    return check.__name__


def _expecting_failure(check: Check, reason: str) -> Check:
    @wraps(check)
    def run(component: Any) -> None:
        try:
            check(component)
        except (SkipCheck, unittest.SkipTest):
            raise
        except Exception as exc:
            raise ExpectedFailure(f"{reason} ({type(exc).__name__}: {exc})") from exc
        raise UnexpectedPass(f"{_name(check)} passed but is declared an expected failure ({reason}); "
                             "remove it from expected_failed_checks")

    run.__name__ = _name(check)
    return run


def check_component(component: Any, *, expected_failed_checks: dict[str, str] | None = None,
                    on_fail: str | None = "raise", sklearn_checks: bool = True) -> list[dict[str, Any]]:
    """Run every applicable check. Returns one dict per check: check_name, status, reason.

    Status is ``passed``, ``skipped``, ``xfail`` (declared and failing) or ``failed`` (including a
    declared failure that passed). ``on_fail="raise"`` raises the first failure; ``None`` only
    reports.
    """
    results = []
    for comp, check in component_checks(component, expected_failed_checks=expected_failed_checks,
                                         sklearn_checks=sklearn_checks):
        name = _name(check)
        try:
            check(comp)
        except (SkipCheck, unittest.SkipTest) as exc:
            results.append({"check_name": name, "status": "skipped", "reason": str(exc)})
        except ExpectedFailure as exc:
            results.append({"check_name": name, "status": "xfail", "reason": str(exc)})
        except Exception as exc:
            results.append({"check_name": name, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                            "exception": traceback.format_exc()})
            if on_fail == "raise":
                raise
        else:
            results.append({"check_name": name, "status": "passed", "reason": ""})
    return results


def parametrize_with_checks(components: list[Any], *, expected_failed_checks: Callable[[Any], dict[str, str]] | None = None,
                            sklearn_checks: bool = True) -> Any:
    """pytest decorator: one test per (component, check), ids like ``ColourLogReg()-check_fit_returns_self``.

    ``expected_failed_checks(component)`` returns that component's ``{check_name: reason}``.
    """
    import pytest

    params = []
    for component in components:
        expected = expected_failed_checks(component) if expected_failed_checks else {}
        for comp, check in component_checks(component, expected_failed_checks=expected,
                                            sklearn_checks=sklearn_checks):
            params.append(pytest.param(comp, as_pytest(check), id=f"{_label(comp)}-{_name(check)}"))
    return pytest.mark.parametrize("component, check", params)


def _label(component: Any) -> str:
    return repr(component) if len(repr(component)) <= 60 else type(component).__name__


def as_pytest(check: Check) -> Check:
    """The check reporting to pytest: a skip as a skip, a declared failure as an xfail."""
    def run(component: Any) -> None:
        import pytest

        try:
            check(component)
        except SkipCheck as exc:
            pytest.skip(str(exc))
        except ExpectedFailure as exc:
            pytest.xfail(str(exc))

    run.__name__ = _name(check)
    return run


#: the former name of :func:`as_pytest`
_skipping = as_pytest
