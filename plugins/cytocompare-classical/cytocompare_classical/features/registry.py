"""The one list of feature families: filled by ``@register_family``, found by importing every
module of this package (so a new family is a new file and nothing else).

Column order is each family's ``column_order`` (not the import order, which depends on file
names), so the feature names of a profile stay the same when a family is added elsewhere.
"""

from __future__ import annotations

import importlib
import pkgutil

from cytocompare_classical.features.base import PROFILE_NAMES, FeatureFamily

_FAMILIES: dict[str, type[FeatureFamily]] = {}
_discovered = False


def register_family(cls: type[FeatureFamily]) -> type[FeatureFamily]:
    """Class decorator: add a :class:`FeatureFamily` subclass to the feature set of every profile.

    Raises ``TypeError`` for a family without a name, docstring or feature docs, and for a name or
    ``column_order`` already taken (two families would write the same columns, or an ambiguous
    order would reorder columns).
    """
    if not (isinstance(cls, type) and issubclass(cls, FeatureFamily)):
        raise TypeError(f"@register_family expects a FeatureFamily subclass, got {cls!r}")
    what = f"{cls.__module__}.{cls.__qualname__}"
    if not cls.name or not (cls.__doc__ or "").strip() or not cls.feature_docs:
        raise TypeError(f"feature family {what} needs a name, a docstring and feature_docs")
    for other in _FAMILIES.values():
        if other is cls or (other.__module__, other.__qualname__) == (cls.__module__, cls.__qualname__):
            continue  # the same class registered again (a module reloaded)
        if other.name == cls.name:
            raise TypeError(f"feature family name {cls.name!r} of {what} is taken by {other.__qualname__}")
        if other.column_order == cls.column_order:
            raise TypeError(f"column_order {cls.column_order} of {what} is taken by {other.__qualname__}")
    for key, spec in cls.settings_spec.items():
        for profile in PROFILE_NAMES:
            problem = spec.check(spec.value(profile)) if spec.check is not None else None
            if problem:
                raise TypeError(f"{what}: setting {key} in profile {profile!r} {problem}")
    _FAMILIES[cls.name] = cls
    return cls


def _discover() -> None:
    """Import every module of this package once; family modules register as they load."""
    global _discovered
    if _discovered:
        return
    package = __name__.rpartition(".")[0]
    path = importlib.import_module(package).__path__
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
    _discovered = True


def family_classes() -> tuple[type[FeatureFamily], ...]:
    """Every registered family class, in column order."""
    _discover()
    return tuple(sorted(_FAMILIES.values(), key=lambda cls: cls.column_order))
