"""Opt-in pytest fixtures for plugin authors: ``pytest_plugins = ["cytocompare.testing.pytest_plugin"]``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cytocompare import plugins
from cytocompare.images import ImageSet
from cytocompare.registry import Registry
from cytocompare.testing.datasets import make_tiny_features, make_tiny_images


@pytest.fixture
def isolated_registry() -> Iterator[Any]:
    """A factory ``make(*plugin_modules) -> Registry`` that ignores installed entry points.

    The process-wide plugin manager is restored afterwards.
    """
    saved = (plugins._PM, plugins._REGISTRY)

    def make(*modules: Any) -> Registry:
        pm = plugins.make_plugin_manager(entry_points=False, extra_plugins=modules)
        plugins.set_plugin_manager(pm)
        return plugins.get_registry()

    try:
        yield make
    finally:
        plugins._PM, plugins._REGISTRY = saved


@pytest.fixture
def tiny_images() -> ImageSet:
    """24 synthetic cell images of 3 classes, 48 x 48 px."""
    return make_tiny_images()


@pytest.fixture
def tiny_features() -> tuple[Any, Any]:
    """A separable 60 x 10 feature matrix with string labels."""
    return make_tiny_features()
