"""A throwaway plugin for tests, built from the components it registers."""

from __future__ import annotations

from typing import Any

from cytocompare import hookimpl


def make_plugin(**kinds: dict[str, Any]) -> Any:
    """A plugin object whose ``register_<kind>`` hooks register the given components.

    ``make_plugin(classifiers={"majority": Majority})`` implements ``register_classifiers`` only;
    pass it to the ``isolated_registry`` fixture. Tests of the hooks themselves spell them out.
    """
    def hook(components: dict[str, Any]) -> Any:
        @hookimpl
        def register_kind(self: Any, register: Any) -> None:
            for name, component in components.items():
                register(name, component)
        return register_kind

    namespace = {f"register_{kind}": hook(components) for kind, components in kinds.items()}
    return type("TestPlugin", (), namespace)()
