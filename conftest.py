"""Test configuration shared by tests/ and plugins/*/tests.

* ``--run-slow`` / ``--run-gpu`` un-skip tests marked ``slow`` / ``gpu``.
* ``shared_data`` fixture: the real images in ../shared/data, or a clean skip without them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")
    parser.addoption("--run-gpu", action="store_true", help="run tests marked gpu (needs CUDA)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(pytest.mark.skip(reason="slow: run with --run-slow"))
        if "gpu" in item.keywords and not config.getoption("--run-gpu"):
            item.add_marker(pytest.mark.skip(reason="needs a GPU: run with --run-gpu"))


def shared_data_dir() -> Path | None:
    """../shared/data beside the checkout (or $CYTOCOMPARE_SHARED_DATA), if it exists."""
    env = os.environ.get("CYTOCOMPARE_SHARED_DATA")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (candidate / "matek-bm").is_dir():
            return candidate
    return None


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data (matek-bm/, pbc/); skips the test cleanly when it is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not present (a fresh clone has only the bundled sample)")
    return path
