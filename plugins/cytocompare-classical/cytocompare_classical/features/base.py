"""The shared pieces of every feature family: the per-cell context, settings, the base class.

Naming scheme (stable, unique, readable): ``<mask>.<channel>.<family>[_<param>].<feature>`` for
intensity/texture families, e.g. ``nucleus.hsv_h.haralick_d2.contrast_mean``, and
``<mask>.shape.<feature>`` for shape, e.g. ``cell.shape.solidity``.

A family owns its settings (as in pyradiomics): it declares each one once, with its value in the
``full`` profile and, where they differ, in the other profiles; the feature set of a profile is
every registered family configured with that profile's values (``cytocompare_classical.features``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from cytocompare_classical.features.channels import CHANNELS
from cytocompare_classical.features.stain import STAIN_CHANNELS

#: masks, in column order
MASKS: tuple[str, ...] = ("cell", "nucleus", "cytoplasm")

#: value written for any feature that is undefined (empty mask, zero variance, failed
#: segmentation): features are always finite so downstream selectors and SVMs never see NaN
FILL_VALUE: float = 0.0

#: the profiles, default first: ``full`` (>6,000 features, the paper-scale baseline) and
#: ``quick`` (a few hundred, for CI and conformance runs). A setting's default is its ``full`` value.
PROFILE_NAMES: tuple[str, ...] = ("full", "quick")

#: every colour channel, in the order of ``channels.CHANNELS`` (the order channels are computed in)
ALL_CHANNELS: tuple[str, ...] = tuple(CHANNELS)

#: channels no profile uses (a family's ``channels`` setting may list them): the Giemsa stain
#: optical densities of ``stain.py``; every channel a setting may name is one of these two tuples
OPT_IN_CHANNELS: tuple[str, ...] = tuple(STAIN_CHANNELS)
KNOWN_CHANNELS: tuple[str, ...] = ALL_CHANNELS + OPT_IN_CHANNELS


# ------------------------------------------------------------------------------ settings


def _frozen(value: Any) -> Any:
    """Lists (as YAML gives them) become tuples, recursively, so that settings are hashable and
    a setting given as ``[1, 2]`` names the same features as the default ``(1, 2)``."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


class Setting:
    """One setting of a family: its ``full`` value (the default), a one-line description, the
    values of the profiles that differ (``quick=...``) and an optional check of a value.

    ``check(value)`` returns an error message (or ``None`` if the value is fine).
    """

    def __init__(self, default: Any, doc: str, *, check: Callable[[Any], str | None] | None = None,
                 **by_profile: Any) -> None:
        unknown = sorted(set(by_profile) - set(PROFILE_NAMES[1:]))
        if unknown:
            raise TypeError(f"unknown profile(s) {unknown} in a Setting; profiles are {list(PROFILE_NAMES)}")
        self.default = _frozen(default)
        self.doc = doc
        self.check = check
        self.by_profile = {p: _frozen(v) for p, v in by_profile.items()}

    def value(self, profile: str) -> Any:
        return self.by_profile.get(profile, self.default)


class Settings:
    """A family's resolved settings: read-only attributes (``settings.channels``), equal and
    hashable by value, picklable (the extractor sends them to joblib workers)."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"no setting {key!r}; settings are {sorted(self._values)}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("settings are read-only; build the family with other settings instead")

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items())))

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Settings, (self._values,))


# the checks families share (each returns an error message or None)


def check_channels(value: Any) -> str | None:
    if not isinstance(value, tuple) or not all(isinstance(c, str) for c in value):
        return f"must be a list of channel names, got {value!r}"
    unknown = [c for c in value if c not in KNOWN_CHANNELS]
    if unknown:
        # MGG has no haematoxylin: say which channel plays its part
        haem = [c for c in unknown if "hematox" in c.lower() or "haematox" in c.lower()]
        hint = f" ({haem[0]!r}: the basic, nucleus-staining Giemsa component is 'methylblue_od')" if haem else ""
        return (f"unknown channel(s) {unknown}; channels are {list(ALL_CHANNELS)} and the opt-in stain "
                f"channels {list(OPT_IN_CHANNELS)}{hint}")
    if len(set(value)) != len(value):
        return f"lists a channel twice: {list(value)}"
    return None


def check_positive_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return f"must be a positive integer, got {value!r}"
    return None


def check_grey_levels(value: Any) -> str | None:
    # channels are quantised to uint8 (CellContext.quantised): at most 256 levels
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 256:
        return f"must be an integer from 2 to 256, got {value!r}"
    return None


def check_positive_ints(value: Any) -> str | None:
    if not isinstance(value, tuple) or not value or any(check_positive_int(v) for v in value):
        return f"must be a non-empty list of positive integers, got {value!r}"
    return None


def check_positive_numbers(value: Any) -> str | None:
    ok = isinstance(value, tuple) and value and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value
    )
    return None if ok else f"must be a non-empty list of positive numbers, got {value!r}"


# ------------------------------------------------------------------------------ per-cell context


@dataclass
class CellContext:
    """Everything the families need for one cell, computed once and shared.

    ``channels`` are float32 images scaled to [0, 1] with a *fixed* range per channel (not per
    image), so that colour differences between cells survive; ``masks`` are boolean; all arrays
    are cropped to the cell's bounding box plus a margin (texture needs a little context).
    """

    channels: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    image_shape: tuple[int, int]
    offset: tuple[int, int]
    ok: bool
    _quantised: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)

    def quantised(self, channel: str, levels: int) -> np.ndarray:
        """``channel`` quantised to ``levels`` grey levels (uint8), computed once per cell."""
        key = (channel, levels)
        if key not in self._quantised:
            x = self.channels[channel]
            self._quantised[key] = np.minimum((x * levels).astype(np.int32), levels - 1).astype(np.uint8)
        return self._quantised[key]


# ------------------------------------------------------------------------------ the family


class FeatureFamily:
    """One family of features (pyradiomics-style), configured by its own settings.

    A subclass, in its own module of ``cytocompare_classical.features`` and decorated with
    :func:`~cytocompare_classical.features.registry.register_family`, sets

    * ``name`` (used in feature names, timings and the docs) and a class docstring (what, why);
    * ``column_order``: where its columns go (families are concatenated by increasing value);
    * ``settings_spec``: setting name → :class:`Setting` (its ``full`` value, its values in the
      other profiles where they differ, a description and a check);
    * ``feature_docs``: feature suffix → one-line description;

    and implements ``names()`` and ``compute(ctx)`` reading ``self.settings``; ``compute``
    returns exactly ``len(names())`` values in the same order, and names depend on the settings
    alone (so they are known before any image). ``channels_needed()`` defaults to the
    ``channels`` setting; override it when channels are given another way.
    """

    name: ClassVar[str] = ""
    column_order: ClassVar[int] = 0
    settings_spec: ClassVar[dict[str, Setting]] = {}
    feature_docs: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: Mapping[str, Any] | None = None, *, profile: str = PROFILE_NAMES[0]) -> None:
        """The family with ``profile``'s values, overridden by ``settings`` (validated: an
        unknown setting or a bad value raises ``ValueError`` naming ``<family>.<setting>``)."""
        if profile not in PROFILE_NAMES:
            raise ValueError(f"unknown feature profile {profile!r}; choose one of {sorted(PROFILE_NAMES)}")
        given = dict(settings or {})
        unknown = sorted(set(given) - set(self.settings_spec))
        if unknown:
            valid = ", ".join(self.settings_spec) or "none"
            raise ValueError(f"unknown setting(s) {', '.join(f'{self.name}.{k}' for k in unknown)}; "
                             f"the settings of family {self.name!r} are: {valid}")
        values = {}
        for key, spec in self.settings_spec.items():
            value = _frozen(given[key]) if key in given else spec.value(profile)
            problem = spec.check(value) if spec.check is not None else None
            if problem:
                raise ValueError(f"feature setting {self.name}.{key} {problem}")
            values[key] = value
        self.settings = Settings(values)

    def channels_needed(self) -> tuple[str, ...]:
        return self.settings.channels if "channels" in self.settings_spec else ()

    def names(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(self, ctx: CellContext) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict[str, object]:
        """Summary for the docs: docstring, per-feature descriptions, settings and the count."""
        return {
            "name": self.name,
            "doc": (type(self).__doc__ or "").strip(),
            "features": dict(self.feature_docs),
            "settings": self.settings.as_dict(),
            "count": len(self.names()),
        }

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.settings == self.settings  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__qualname__, self.settings))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings.as_dict()!r})"
