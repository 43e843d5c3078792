"""The hook specifications: every way a plugin can extend cytocompare.

Each hook receives a ``register`` callback (the llm/datasette style). A plugin calls it once per
component it provides::

    register(name, factory, *, description="", fast_params=None)

``factory`` is either the component class itself or a lazy ``"module:attribute"`` string, which
is imported only when the component is used, so that ``cytocompare list`` never imports heavy
backends such as torch. ``fast_params`` are constructor parameters that make the component fast
enough for the conformance kit and for CI (tiny models, few epochs). What a component is
(deterministic, which backends, GPU) its class declares: ``tags: ClassVar[Tags]``
(:class:`cytocompare.protocols.Tags`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only
    import click

    from cytocompare.registry import RegisterCallback

PROJECT_NAME = "cytocompare"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_feature_extractors(register: RegisterCallback) -> None:
    """Register feature extractors: per-image, stateless maps from an image to a feature vector."""


@hookspec
def register_feature_selectors(register: RegisterCallback) -> None:
    """Register feature selectors: supervised, fitted on training rows only (e.g. mRMR)."""


@hookspec
def register_classifiers(register: RegisterCallback) -> None:
    """Register classifiers that take either feature matrices or images as input."""


@hookspec
def register_evaluators(register: RegisterCallback) -> None:
    """Register evaluators that turn true and predicted labels into metric rows."""


@hookspec
def register_reporters(register: RegisterCallback) -> None:
    """Register reporters that turn a finished run directory into files a person can open."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``cytocompare`` command line."""
