"""Tolerated pairs of classes -> tolerant correctness.

The paper's "tolerant" metrics forgive confusions between adjacent maturation stages (e.g. a
myelocyte called a metamyelocyte). A :class:`ToleranceMap` holds those unordered pairs; the
default map of the ``matek2021`` scheme is *inferred* from Table 1 (see docs/tolerance.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from cytocompare.classes import ClassScheme


class ToleranceMap:
    """A symmetric set of tolerated (true, predicted) class pairs.

    Parameters
    ----------
    pairs
        Unordered pairs of class codes, e.g. ``[("BLA", "PMO"), ("PMO", "MYB")]``. Each pair
        must name two distinct labels; duplicates and both orders are allowed and merged.

    Notes
    -----
    Tolerance is not transitive: with BLA–PMO and PMO–MYB, a blast called a myelocyte is still
    wrong.
    """

    def __init__(self, pairs: Iterable[Sequence[str]] = ()) -> None:
        normalised: set[frozenset[str]] = set()
        for pair in pairs:
            items = list(pair)
            if len(items) != 2 or not all(isinstance(x, str) and x for x in items):
                raise ValueError(f"a tolerated pair must be two class codes, got {pair!r}")
            if items[0] == items[1]:
                raise ValueError(f"a tolerated pair must name two distinct classes, got {pair!r}")
            normalised.add(frozenset(items))
        self.pairs: frozenset[frozenset[str]] = frozenset(normalised)
        self._partners: dict[str, frozenset[str]] = {}
        for p in self.pairs:
            a, b = sorted(p)
            self._partners[a] = self._partners.get(a, frozenset()) | {b}
            self._partners[b] = self._partners.get(b, frozenset()) | {a}

    @classmethod
    def from_scheme(cls, scheme: ClassScheme | str = "matek2021") -> ToleranceMap:
        """The scheme's default tolerated pairs (a :class:`ClassScheme` or a scheme name/path)."""
        if isinstance(scheme, str):
            from cytocompare.classes import load_scheme

            scheme = load_scheme(scheme)
        return cls(tuple(sorted(p)) for p in scheme.tolerated_pairs)

    def partners(self, c: str) -> frozenset[str]:
        """Classes whose confusion with ``c`` is tolerated (not including ``c`` itself)."""
        return self._partners.get(c, frozenset())

    def is_tolerated(self, true: str, pred: str) -> bool:
        """True when ``pred`` equals ``true`` or the two form a tolerated pair."""
        return true == pred or pred in self.partners(true)

    def correct(self, y_true: Sequence[str] | np.ndarray, y_pred: Sequence[str] | np.ndarray) -> np.ndarray:
        """Boolean array: tolerant correctness of every prediction."""
        t = np.asarray(y_true, dtype=object)
        p = np.asarray(y_pred, dtype=object)
        if t.shape != p.shape:
            raise ValueError(f"y_true and y_pred differ in shape: {t.shape} vs {p.shape}")
        out = t == p
        # loop over pairs (few) rather than images (many)
        for pair in self.pairs:
            a, b = sorted(pair)
            out |= ((t == a) & (p == b)) | ((t == b) & (p == a))
        return np.asarray(out, dtype=bool)

    def as_list(self) -> list[list[str]]:
        """Sorted ``[[a, b], ...]`` as stored in run.json."""
        return sorted(sorted(p) for p in self.pairs)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(tuple(p) for p in self.as_list())  # type: ignore[misc]

    def __len__(self) -> int:
        return len(self.pairs)

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ToleranceMap) and self.pairs == other.pairs

    def __hash__(self) -> int:
        return hash(self.pairs)

    def __repr__(self) -> str:
        return f"ToleranceMap({[tuple(p) for p in self.as_list()]!r})"
