"""The class scheme (codes, names, lineages, tolerated pairs) as data, loaded from YAML."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from cytocompare.errors import DataError, ProtocolError


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
    #: class codes in lineage order (each lineage in maturation order) for Table 1 in the paper's
    #: layout (YAML key ``lineage_order``; default: classes grouped by lineage in file order)
    lineage_codes: tuple[str, ...] = ()
    #: a published per-class table to print beside a run's values (YAML key ``published_table1``):
    #: ``method``, ``status``, ``sources``, ``caveat`` and ``classes`` (code -> metric -> value)
    published_table1: dict | None = field(default=None, compare=False)

    @property
    def lineage_order(self) -> list[str]:
        """Every code, in ``lineage_order`` (codes it leaves out: grouped by lineage, file order)."""
        order = [c for c in self.lineage_codes if c in self.codes]
        rest = [c for c in self.classes if c.code not in order]
        lineages = list(dict.fromkeys(c.lineage for c in rest))
        return order + [c.code for lin in lineages for c in rest if c.lineage == lin]

    @property
    def codes(self) -> list[str]:
        return [c.code for c in self.classes]

    def get(self, code: str) -> CellClass:
        for c in self.classes:
            if c.code == code:
                return c
        raise KeyError(code)

    def near_code(self, label: str) -> str | None:
        """The code a label not of this scheme most likely means (the did-you-mean), or None.

        Tried in order: the code in other case (``bla``), a class name (``blast``, ``eosinophil``),
        then :func:`difflib.get_close_matches` (its default cutoff, 0.6, as every did-you-mean of
        cytocompare) over the codes and then over the names.
        """
        if not isinstance(label, str) or not label:
            return None
        by_upper = {c.code.upper(): c.code for c in self.classes}
        by_name = {c.name.lower(): c.code for c in self.classes}
        if label.upper() in by_upper:
            return by_upper[label.upper()]
        if label.lower() in by_name:
            return by_name[label.lower()]
        near = difflib.get_close_matches(label.upper(), sorted(by_upper), n=1)
        if near:
            return by_upper[near[0]]
        near = difflib.get_close_matches(label.lower(), sorted(by_name), n=1)
        return by_name[near[0]] if near else None

    def unknown_label_message(self, label: str) -> str:
        """One line: ``label`` is not a code of this scheme, with the did-you-mean."""
        near = self.near_code(label)
        hint = f" (did you mean {near!r}, {self.get(near).name}?)" if near else ""
        return f"{label!r} is not a class code of scheme {self.name!r}{hint}"


def label_remedy(scheme: ClassScheme) -> str:
    """What to do about labels outside ``scheme`` (the last line of every such message)."""
    return (f"the codes of scheme {scheme.name!r} are {', '.join(scheme.codes)}: map a folder name or file "
            "prefix to one with label_map, leave a class out with 'classes:', or, to use other labels, "
            "name your own scheme file that defines them (class_scheme: path/to/scheme.yaml)")


def unknown_labels(labels: Iterable[str], scheme: ClassScheme) -> list[str]:
    """The labels that are not codes of ``scheme``, sorted and without repeats."""
    codes = set(scheme.codes)
    return sorted({str(label) for label in labels} - codes)


def check_labels(labels: Iterable[str], scheme: ClassScheme, where: str) -> None:
    """Raise :class:`~cytocompare.errors.DataError` naming every label (e.g. a folder name or a
    ``label_map`` target) that is not a code of ``scheme``, each with its did-you-mean.

    ``where`` says where the labels come from (``"training set /data/bm"``), and starts the
    message. The runner calls it on the labels a data set was loaded with, before it writes
    anything; ``config.check_against_registry`` checks the protocol's own codes (``label_map``
    targets, ``classes``, tolerated pairs, no-call classes) statically.
    """
    unknown = unknown_labels(labels, scheme)
    if not unknown:
        return
    lines = [f"{where}: {len(unknown)} label(s) not in class scheme {scheme.name!r}"]
    lines += [f"    {scheme.unknown_label_message(label)}" for label in unknown]
    lines.append(f"  {label_remedy(scheme)}")
    raise DataError("\n".join(lines))


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
        lineage_codes=tuple(data.get("lineage_order", []) or []),
        published_table1=_published(data.get("published_table1"), codes, origin),
    )


_PUBLISHED_METRICS = ("precision_strict", "recall_strict", "precision_tolerant", "recall_tolerant")


def _published(table: object, codes: set[str], origin: str) -> dict | None:
    """The scheme's ``published_table1``, checked: known codes, metrics of :data:`_PUBLISHED_METRICS`
    with values in [0, 1]."""
    if table is None:
        return None
    if not isinstance(table, dict) or not isinstance(table.get("classes"), dict):
        raise ProtocolError(f"{origin}: published_table1 needs a 'classes' mapping (code -> metric -> value)")
    for code, vals in table["classes"].items():
        if code not in codes:
            raise ProtocolError(f"{origin}: published_table1: {code!r} is not a class of the scheme")
        for metric, v in (vals or {}).items():
            if metric not in _PUBLISHED_METRICS or not isinstance(v, int | float) or not 0 <= v <= 1:
                raise ProtocolError(f"{origin}: published_table1.{code}.{metric}: expected one of "
                                    f"{', '.join(_PUBLISHED_METRICS)} with a value in [0, 1]")
    return table


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
