"""scikit-learn's estimator conventions, without depending on scikit-learn's base classes.

Every component stores its constructor arguments unchanged as attributes of the same name (so
``get_params``/``set_params``/``clone`` work from the ``__init__`` signature) and sets fitted
state only in ``fit``, in attributes whose names end with an underscore.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, ClassVar

from cytocompare.errors import NotFittedError
from cytocompare.protocols import Tags


class BaseComponent:
    """Base class giving ``get_params``, ``set_params``, ``clone`` and a readable ``repr``.

    Subclasses list every parameter as an explicit keyword argument of ``__init__`` (no
    ``*args``/``**kwargs``), exactly as scikit-learn requires.
    """

    #: facts the conformance kit and runner read (:func:`get_tags`)
    tags: ClassVar[Tags] = Tags()

    @classmethod
    def _param_names(cls) -> list[str]:
        init = cls.__init__
        if init is object.__init__:
            return []
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must not take *args or **kwargs (scikit-learn convention)")
        return sorted(p.name for p in params if p.name != "self")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters by name; with ``deep``, nested components' as ``outer__inner``."""
        out: dict[str, Any] = {}
        for name in self._param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                for k, v in value.get_params(deep=True).items():
                    out[f"{name}__{k}"] = v
            out[name] = value
        return out

    def set_params(self, **params: Any) -> BaseComponent:
        """Set constructor parameters (``outer__inner`` reaches nested components)."""
        valid = self._param_names()
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"invalid parameter {name!r} for {type(self).__name__}; valid parameters: {', '.join(valid)}"
                )
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self

    def __repr__(self) -> str:
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


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return a is b


def clone(component: Any) -> Any:
    """A new, unfitted component with the same parameters (scikit-learn's ``clone``)."""
    if isinstance(component, (list, tuple)):
        return type(component)(clone(c) for c in component)
    if not hasattr(component, "get_params"):
        return copy.deepcopy(component)
    params = component.get_params(deep=False)
    new_params = {k: clone(v) if hasattr(v, "get_params") and not isinstance(v, type) else copy.deepcopy(v)
                  for k, v in params.items()}
    new = type(component)(**new_params)
    for name, value in new_params.items():
        if getattr(new, name) is not value and not _same(getattr(new, name), value):
            raise RuntimeError(
                f"cannot clone {type(component).__name__}: its __init__ modifies parameter {name!r}; "
                "store constructor arguments unchanged and validate them in fit"
            )
    return new


def is_fitted(component: Any) -> bool:
    """True when the component has any public attribute ending in ``_`` (scikit-learn's rule)."""
    return any(k.endswith("_") and not k.startswith("_") for k in vars(component))


def check_is_fitted(component: Any, attributes: str | list[str] | None = None) -> None:
    """Raise :class:`NotFittedError` unless ``component`` has been fitted."""
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
    ``combined_tags()``.
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
