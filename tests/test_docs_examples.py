"""The code a plugin author copies from docs/writing-a-plugin.md must pass the conformance kit."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md"


def _example_module(tmp_path: Path, monkeypatch):
    blocks = re.findall(r"```python\n(# cytocompare_mynet/classifier.py\n.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, "docs/writing-a-plugin.md lost its classifier example"
    (tmp_path / "mynet_classifier.py").write_text(blocks[0])
    monkeypatch.syspath_prepend(str(tmp_path))  # importable by name, so the pickle checks work
    monkeypatch.delitem(sys.modules, "mynet_classifier", raising=False)
    return importlib.import_module("mynet_classifier")


def test_the_documented_classifier_passes_the_conformance_kit(tmp_path, monkeypatch):
    from cytocompare.testing import check_component

    results = check_component(_example_module(tmp_path, monkeypatch).MyNet(n_estimators=5))
    failed = [r for r in results if r["status"] not in ("passed", "skipped")]
    assert not failed, failed
    assert sum(r["status"] == "passed" for r in results) > 40  # scikit-learn's checks ran too
