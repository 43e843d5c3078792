"""Evaluation of a run directory: which evaluators and reporters run, and how (one path for
``cytocompare run`` and ``cytocompare report``). The maths lives in :mod:`cytocompare.metrics` and
:mod:`cytocompare.stats`, which know no registry and no files.
"""

from __future__ import annotations

#: evaluators a protocol runs unless it names its own
DEFAULT_EVALUATORS: tuple[str, ...] = ("precision-recall", "summary", "external")
#: reporters a protocol runs unless it names its own (html last: it links what the others wrote)
DEFAULT_REPORTERS: tuple[str, ...] = ("table1", "recall-chart", "confusion-chart", "paired-stats", "html")
