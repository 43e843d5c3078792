"""Name → factory registry of components, filled through the plugin hooks (timm-style).

Factories are kept as lazy ``"module:attribute"`` strings where the plugin gives one, so listing
what is installed imports nothing heavy.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

from cytocompare.errors import DuplicateComponentError, ProtocolError, UnknownComponentError

Kind = Literal["feature_extractor", "feature_selector", "classifier", "evaluator", "reporter"]
#: every kind of component, in the order listings show them
KINDS: tuple[Kind, ...] = get_args(Kind)
#: the kinds a method is built from (features → selector → classifier); the conformance kit checks these
METHOD_KINDS: tuple[Kind, ...] = ("feature_extractor", "feature_selector", "classifier")

#: hook name for each kind of component
HOOK_FOR_KIND: dict[Kind, str] = {
    "feature_extractor": "register_feature_extractors",
    "feature_selector": "register_feature_selectors",
    "classifier": "register_classifiers",
    "evaluator": "register_evaluators",
    "reporter": "register_reporters",
}


class RegisterCallback(Protocol):
    """The signature of the ``register`` callback handed to every registration hook."""

    def __call__(
        self,
        name: str,
        factory: str | Callable[..., Any],
        *,
        description: str = "",
        fast_params: dict[str, Any] | None = None,
    ) -> None: ...


@dataclass
class ComponentSpec:
    """One registered component: where it comes from and how to build it.

    What a component *is* (deterministic, which backends, GPU) is declared on its class
    (``tags: ClassVar[Tags]``, read with :func:`cytocompare.base.get_tags`), not here.
    """

    name: str
    kind: Kind
    factory: str | Callable[..., Any]
    plugin: str
    distribution: str
    version: str
    description: str = ""
    fast_params: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """Human-readable origin, used in error messages and listings."""
        return f"plugin {self.plugin!r} ({self.distribution} {self.version})"

    @property
    def factory_path(self) -> str:
        if isinstance(self.factory, str):
            return self.factory
        return f"{self.factory.__module__}:{self.factory.__qualname__}"

    def load(self) -> Callable[..., Any]:
        """Import and return the factory (a class or a function returning a component)."""
        if not isinstance(self.factory, str):
            return self.factory
        module_name, _, attr = self.factory.partition(":")
        if not attr:
            raise UnknownComponentError(
                f"{self.kind} {self.name!r} from {self.source} has factory {self.factory!r}; "
                "expected 'module:attribute'"
            )
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The factory's constructor parameters (imports the factory)."""
        factory = self.load()
        target = factory.__init__ if inspect.isclass(factory) else factory
        params = dict(inspect.signature(target).parameters)
        params.pop("self", None)
        return {
            k: p for k, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def check_params(self, params: dict[str, Any], where: str = "") -> None:
        """Raise :class:`ProtocolError` for parameters the factory does not take."""
        valid = self.parameters()
        unknown = [k for k in params if k not in valid]
        if unknown:
            lines = []
            for k in unknown:
                near = difflib.get_close_matches(k, valid, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                lines.append(f"unknown parameter {k!r} for {self.kind} {self.name!r}{hint}")
            lines.append(f"valid parameters: {', '.join(valid) or '(none)'}")
            prefix = f"{where}: " if where else ""
            raise ProtocolError(prefix + "\n  ".join(lines))

    def create(self, **params: Any) -> Any:
        """Build a component with the given parameters (validated first)."""
        self.check_params(params)
        return self.load()(**params)


def protocol_defaults(kind: Kind, params: dict[str, Any], factory: Any, *, seed: int,
                      n_jobs: int) -> dict[str, Any]:
    """The injection rule: a component whose constructor takes ``random_state`` gets the
    protocol's ``seed``, and one that takes ``n_jobs`` the protocol's ``n_jobs``, unless the
    protocol sets them for it.

    A feature extractor keeps its own ``n_jobs``: the runner already spreads feature extraction
    over the protocol's ``n_jobs`` through the feature cache (processes inside processes would
    only compete for the same cores), and its parameters key the cache.

    It lives here, below ``config`` and ``runner``, so that the protocol check builds every
    component exactly as the runner will (``cytocompare.runner.protocol_defaults`` is this rule).
    """
    target = factory.__init__ if inspect.isclass(factory) else factory
    takes = inspect.signature(target).parameters
    injected = {"random_state": seed, "n_jobs": n_jobs}
    if kind == "feature_extractor":
        del injected["n_jobs"]
    return {k: v for k, v in injected.items() if k in takes and k not in params} | dict(params)


class Registry:
    """All registered components, by kind and name."""

    def __init__(self) -> None:
        self._specs: dict[Kind, dict[str, ComponentSpec]] = {k: {} for k in KINDS}

    def add(self, spec: ComponentSpec) -> None:
        existing = self._specs[spec.kind].get(spec.name)
        if existing is not None:
            raise DuplicateComponentError(
                f"{spec.kind} {spec.name!r} is registered twice: by {existing.source} "
                f"and by {spec.source}. Uninstall one, or block it with "
                "CYTOCOMPARE_DISABLE_PLUGINS=<plugin>."
            )
        self._specs[spec.kind][spec.name] = spec

    def names(self, kind: Kind) -> list[str]:
        return sorted(self._specs[kind])

    def get(self, kind: Kind, name: str) -> ComponentSpec:
        try:
            return self._specs[kind][name]
        except KeyError:
            raise UnknownComponentError(self.unknown_message(kind, name)) from None

    def near_name(self, kind: Kind, name: str) -> str | None:
        """The installed name of ``kind`` that ``name`` is a near miss of (the did-you-mean:
        :func:`difflib.get_close_matches` with its default cutoff, 0.6), or None."""
        near = difflib.get_close_matches(name, self.names(kind), n=1)
        return near[0] if near else None

    def unknown_message(self, kind: Kind, name: str) -> str:
        names = self.names(kind)
        near = self.near_name(kind, name)
        hint = f"; did you mean {near!r}?" if near else ""
        return f"unknown {kind.replace('_', ' ')} {name!r}{hint} installed: {', '.join(names) or '(none)'}"

    def __contains__(self, key: tuple[Kind, str]) -> bool:
        kind, name = key
        return name in self._specs[kind]

    def __iter__(self) -> Iterator[ComponentSpec]:
        for kind in KINDS:
            yield from (self._specs[kind][n] for n in sorted(self._specs[kind]))

    def create(self, kind: Kind, name: str, params: dict[str, Any] | None = None) -> Any:
        return self.get(kind, name).create(**(params or {}))
