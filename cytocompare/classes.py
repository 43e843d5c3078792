"""The class scheme (codes, names, lineages, tolerated pairs) as data, loaded from YAML."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from cytocompare.errors import ProtocolError


@dataclass(frozen=True)
class CellClass:
    code: str
    name: str
    lineage: str
    n_paper: int | None = None


@dataclass(frozen=True)
class ClassScheme:
    """A named set of classes plus the default tolerance map and no-call classes.

    The partners of a class (the confusions its tolerant metrics forgive) are
    :meth:`cytocompare.tolerance.ToleranceMap.partners` of ``ToleranceMap.from_scheme(scheme)``.
    """

    name: str
    classes: tuple[CellClass, ...]
    tolerated_pairs: frozenset[frozenset[str]]
    no_call_classes: frozenset[str]
    source: str = ""
    #: how ``tolerated_pairs`` were inferred, when the source does not publish them ("" = published);
    #: reports print it next to the tolerant numbers (YAML key ``tolerance_inferred_from``)
    tolerance_inferred_from: str = ""

    @property
    def codes(self) -> list[str]:
        return [c.code for c in self.classes]

    def get(self, code: str) -> CellClass:
        for c in self.classes:
            if c.code == code:
                return c
        raise KeyError(code)


def _parse(data: dict, origin: str) -> ClassScheme:
    try:
        classes = tuple(CellClass(**c) for c in data["classes"])
        pairs = frozenset(frozenset(p) for p in data.get("tolerated_pairs", []))
    except (KeyError, TypeError) as exc:
        raise ProtocolError(f"{origin}: malformed class scheme ({exc})") from None
    codes = {c.code for c in classes}
    for p in pairs:
        if len(p) != 2 or not p <= codes:
            raise ProtocolError(f"{origin}: tolerated pair {sorted(p)} must name two distinct classes of the scheme")
    return ClassScheme(
        name=data.get("name", origin),
        classes=classes,
        tolerated_pairs=pairs,
        no_call_classes=frozenset(data.get("no_call_classes", [])),
        source=data.get("source", ""),
        tolerance_inferred_from=data.get("tolerance_inferred_from", "") or "",
    )


@cache
def load_scheme(name_or_path: str = "matek2021") -> ClassScheme:
    """Load a bundled scheme by name (``matek2021``) or a scheme YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ProtocolError(f"class scheme file {path} not found")
        return _parse(yaml.safe_load(path.read_text()), str(path))
    ref = resources.files("cytocompare") / "schemes" / f"{name_or_path}.yaml"
    if not ref.is_file():
        bundled = sorted(p.name.removesuffix(".yaml") for p in (resources.files("cytocompare") / "schemes").iterdir())
        raise ProtocolError(f"unknown class scheme {name_or_path!r}; bundled: {', '.join(bundled)}")
    return _parse(yaml.safe_load(ref.read_text()), name_or_path)


def matek2021() -> ClassScheme:
    """The paper's 21-class scheme."""
    return load_scheme("matek2021")
