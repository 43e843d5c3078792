"""Components are scikit-learn estimators: :class:`BaseComponent` is ``sklearn.base.BaseEstimator``.

Every component stores its constructor arguments unchanged as attributes of the same name (so
``get_params``/``set_params``/``clone`` work from the ``__init__`` signature) and sets fitted
state only in ``fit``, in attributes whose names end with an underscore. scikit-learn supplies
``get_params``, ``set_params``, ``clone``, the tag machinery and parameter validation
(``_parameter_constraints`` + ``self._validate_params()``); this module adds only what
cytocompare needs on top:

* ``tags: ClassVar[Tags]`` (read with :func:`get_tags`), translated into scikit-learn's tags by
  ``__sklearn_tags__``, so both worlds read the same facts from one declaration;
* a ``repr`` that lists the non-default parameters on one line; run records and the feature
  cache key are built from it, so it must not change with scikit-learn's pretty printer;
* error messages that name the cytocompare mistake (an unknown parameter, an ``__init__`` that
  modifies its argument);
* :func:`check_is_fitted` raising a :class:`~cytocompare.errors.NotFittedError` that is also
  scikit-learn's ``NotFittedError`` (so ``check_estimator`` and user code catching either work).

Classifiers add ``sklearn.base.ClassifierMixin`` (``score``, the classifier tags) before this base;
selectors and extractors add ``TransformerMixin`` (``fit_transform``).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from sklearn.base import BaseEstimator
from sklearn.base import clone as _sklearn_clone

from cytocompare.errors import NotFittedError
from cytocompare.protocols import Tags

__all__ = ["BaseComponent", "check_is_fitted", "clone", "get_tags", "is_fitted"]


class BaseComponent(BaseEstimator):
    """Base class of every component: a scikit-learn estimator with cytocompare's tags.

    Subclasses list every parameter as an explicit keyword argument of ``__init__`` (no
    ``*args``/``**kwargs``) and store it unchanged, exactly as scikit-learn requires.
    """

    #: facts the conformance kit and runner read (:func:`get_tags`)
    tags: ClassVar[Tags] = Tags()

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags, with the facts our :class:`~cytocompare.protocols.Tags` declare."""
        tags = super().__sklearn_tags__()
        ours = get_tags(self)
        tags.non_deterministic = not ours.deterministic
        if getattr(self, "input", "features") == "images":
            # an ImageSet, not a 2-D array: scikit-learn's data checks do not apply
            tags.input_tags.two_d_array = False
        return tags

    def set_params(self, **params: Any) -> BaseComponent:
        """Set constructor parameters (``outer__inner`` reaches nested components)."""
        valid = self._get_param_names()
        for key in params:
            name = key.partition("__")[0]
            if name not in valid:
                raise ValueError(
                    f"invalid parameter {name!r} for {type(self).__name__}; valid parameters: {', '.join(valid)}"
                )
        return super().set_params(**params)

    def __sklearn_clone__(self) -> BaseComponent:
        try:
            return super().__sklearn_clone__()
        except RuntimeError as exc:
            # scikit-learn says "does not set or modifies parameter x"; name it and the fix
            params = self.get_params(deep=False)
            fresh = type(self)(**params)
            changed = [k for k, v in params.items() if getattr(fresh, k, _MISSING) is not v] or ["?"]
            raise RuntimeError(
                f"cannot clone {type(self).__name__}: its __init__ modifies parameter {changed[0]!r}; "
                "store constructor arguments unchanged and validate them in fit"
            ) from exc

    def __repr__(self, N_CHAR_MAX: int = 700) -> str:  # noqa: N803 - scikit-learn's signature
        defaults = {
            p.name: p.default
            for p in inspect.signature(type(self).__init__).parameters.values()
            if p.default is not p.empty
        }
        shown = []
        for name, value in self.get_params(deep=False).items():
            if name in defaults and _same(defaults[name], value):
                continue
            shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return a is b


def clone(component: Any) -> Any:
    """A new, unfitted component with the same parameters: scikit-learn's ``clone``.

    Lists and tuples are cloned element-wise; objects without ``get_params`` are deep-copied.
    """
    return _sklearn_clone(component, safe=False)


def is_fitted(component: Any) -> bool:
    """True when the component has any public attribute ending in ``_`` (scikit-learn's rule).

    A component may decide for itself with ``__sklearn_is_fitted__()``, as in scikit-learn.
    """
    decide = getattr(component, "__sklearn_is_fitted__", None)
    if callable(decide):
        return bool(decide())
    return any(k.endswith("_") and not k.startswith("_") for k in vars(component))


def check_is_fitted(component: Any, attributes: str | list[str] | None = None) -> None:
    """Raise :class:`NotFittedError` unless ``component`` has been fitted.

    The exception is both cytocompare's ``NotFittedError`` (an ``AttributeError``) and
    scikit-learn's (also a ``ValueError``), so ``except`` clauses written for either catch it.
    """
    if attributes is None:
        ok = is_fitted(component)
    else:
        names = [attributes] if isinstance(attributes, str) else attributes
        ok = all(hasattr(component, a) for a in names)
    if not ok:
        raise NotFittedError(
            f"this {type(component).__name__} instance is not fitted yet; call 'fit' before using it"
        )


def get_tags(component: Any) -> Tags:
    """The :class:`~cytocompare.protocols.Tags` of a component or component class.

    Read from the class (``tags: ClassVar[Tags]``), never from an instance or the registration;
    a composite (the :class:`~cytocompare.pipeline.Pipeline`) combines its parts' in
    ``combined_tags()``. (scikit-learn's own tags are ``sklearn.utils.get_tags(component)``.)
    """
    if not isinstance(component, type):
        combined = getattr(component, "combined_tags", None)
        if callable(combined):
            return combined()
    cls = component if isinstance(component, type) else type(component)
    tags = getattr(cls, "tags", None)
    if tags is None:
        return Tags()
    if not isinstance(tags, Tags):
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__}.tags must be a cytocompare.protocols.Tags, "
            f"not {type(tags).__name__} (e.g. tags = Tags(deterministic=True))"
        )
    return tags
