"""Plugin discovery (pluggy) and the registry built from it.

Discovery is lazy and idempotent (the llm pattern): nothing is loaded at import time. Environment
variables control it:

``CYTOCOMPARE_LOAD_PLUGINS=a,b``
    load only these entry-point plugins (empty string: none).
``CYTOCOMPARE_DISABLE_PLUGINS=a,b``
    block these plugins (tox's ``set_blocked``).
``CYTOCOMPARE_TRACE_PLUGINS=1``
    print every hook call to stderr (datasette's hook-call monitoring), the registration hooks
    that :func:`build_registry` calls one plugin at a time included.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy
from pluggy._manager import DistFacade

from cytocompare import hookspecs
from cytocompare.errors import PluginError
from cytocompare.registry import HOOK_FOR_KIND, ComponentSpec, Registry

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME

#: Core components, registered through the very same hooks a third-party plugin uses.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "cytocompare.default_plugins.evaluators",
    "cytocompare.default_plugins.reporters",
)


def _core_version() -> str:
    from cytocompare import __version__

    return __version__


def make_plugin_manager(
    *, entry_points: bool = True, extra_plugins: Iterable[ModuleType | object] = ()
) -> pluggy.PluginManager:
    """Build a plugin manager: defaults, then entry points, then ``extra_plugins``.

    ``entry_points=False`` gives an isolated manager for tests (npe2's TestPluginManager).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in _split_env("CYTOCOMPARE_DISABLE_PLUGINS") or ():
        pm.set_blocked(name)
    for module_name in DEFAULT_PLUGINS:
        module = __import__(module_name, fromlist=["_"])
        pm.register(module, module_name)
    if entry_points:
        _load_entry_points(pm)
    for plugin in extra_plugins:
        pm.register(plugin, name=_object_name(plugin))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc} -- valid hooks: {', '.join(_hook_names())}") from exc
    if _tracing():
        pm.add_hookcall_monitoring(
            lambda name, impls, kw: _trace(f"calling {name} on {len(impls)} plugins"),
            lambda outcome, name, impls, kw: None,
        )
    return pm


def _tracing() -> bool:
    return bool(os.environ.get("CYTOCOMPARE_TRACE_PLUGINS"))


def _trace(message: str) -> None:
    print(f"[plugins] {message}", file=sys.stderr)


def _object_name(plugin: object) -> str:
    """A readable plugin name: the module name, or module:Class for an object."""
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    cls = plugin if isinstance(plugin, type) else type(plugin)
    return f"{cls.__module__}:{cls.__qualname__}"


def _split_env(var: str) -> list[str] | None:
    value = os.environ.get(var)
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _hook_names() -> list[str]:
    return sorted(n for n in dir(hookspecs) if n.startswith("register_"))


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    only = _split_env("CYTOCOMPARE_LOAD_PLUGINS")
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if only is not None and ep.name not in only:
            continue
        if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must say who it is
            dist = ep.dist.name if ep.dist else "?"
            raise PluginError(f"plugin {ep.name!r} from distribution {dist} failed to load: {exc!r}") from exc
        pm.register(plugin, name=ep.name)
        if ep.dist is not None:  # keep pluggy's own bookkeeping so list_plugin_distinfo() works
            pm._plugin_distinfo.append((plugin, DistFacade(ep.dist)))  # type: ignore[attr-defined]


def plugin_distributions(pm: pluggy.PluginManager) -> dict[str, tuple[str, str]]:
    """Map plugin name → (distribution, version); core plugins map to cytocompare itself."""
    out: dict[str, tuple[str, str]] = {}
    for plugin, dist in pm.list_plugin_distinfo():
        name = pm.get_name(plugin)
        if name is not None:
            out[name] = (dist.project_name, dist.version)
    for name, plugin in pm.list_name_plugin():
        if name not in out:
            module = getattr(plugin, "__name__", "") or type(plugin).__module__
            if module.startswith("cytocompare."):
                out[name] = ("cytocompare", _core_version())
            else:
                out[name] = ("(no distribution)", "")
    return out


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Call every registration hook, one plugin at a time, so each component knows its source."""
    registry = Registry()
    dists = plugin_distributions(pm)
    for kind, hook_name in HOOK_FOR_KIND.items():
        hook = getattr(pm.hook, hook_name)
        # pluggy calls the newest registration first; reverse so the order is defaults → plugins.
        for impl in reversed(hook.get_hookimpls()):
            dist, version = dists.get(impl.plugin_name, ("?", ""))
            register = _make_register(registry, kind, impl.plugin_name, dist, version)
            kwargs = {"register": register}
            # called directly (not through pm.hook), so hook-call monitoring would not see it
            if _tracing():
                _trace(f"calling {hook_name} on plugin {impl.plugin_name!r}")
            impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
    return registry


def _make_register(registry: Registry, kind: Any, plugin: str, dist: str, version: str) -> Callable[..., None]:
    def register(
        name: str,
        factory: str | Callable[..., Any],
        *,
        description: str = "",
        fast_params: dict[str, Any] | None = None,
    ) -> None:
        registry.add(
            ComponentSpec(
                name=name,
                kind=kind,
                factory=factory,
                plugin=plugin,
                distribution=dist,
                version=version,
                description=description,
                fast_params=dict(fast_params or {}),
            )
        )

    return register


_PM: pluggy.PluginManager | None = None
_REGISTRY: Registry | None = None


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loaded on first use."""
    global _PM
    if _PM is None:
        _PM = make_plugin_manager()
    return _PM


def get_registry() -> Registry:
    """The process-wide registry of components, built on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = build_registry(get_plugin_manager())
    return _REGISTRY


def reset() -> None:
    """Forget the loaded plugins (tests use this after changing the environment)."""
    global _PM, _REGISTRY
    _PM = None
    _REGISTRY = None


def set_plugin_manager(pm: pluggy.PluginManager | None) -> None:
    """Install a specific plugin manager (the testing kit's isolated registry uses this)."""
    global _PM, _REGISTRY
    _PM = pm
    _REGISTRY = None
