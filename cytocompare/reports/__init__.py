"""Reports of a run directory: tables (CSV, Markdown), charts (matplotlib), index.html.

Reporters read ``metrics/*.csv`` (computed by :func:`cytocompare.metrics.evaluate_run` when
missing) and the predictions; :func:`redraw` recomputes the metrics and runs them all (the
CLI's ``cytocompare report RUN_DIR``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cytocompare.rundir import RunDir

#: reporters run when run.json names none
DEFAULT_REPORTERS = ("table1", "paired-stats", "recall-chart", "confusion-chart", "html")


def ensure_metrics(run_dir: str | Path | RunDir) -> RunDir:
    """The run directory, with ``metrics/long.csv`` and ``summary.csv`` computed if missing."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not (run.path / "metrics" / "long.csv").is_file() or not (run.path / "metrics" / "summary.csv").is_file():
        from cytocompare.metrics import evaluate_run

        evaluate_run(run)
    return run


def _float(s: str) -> float:
    try:
        return float(s) if s != "" else math.nan
    except ValueError:
        return math.nan


@dataclass
class Stat:
    mean: float
    sd: float
    n_folds: int


class MetricsView:
    """Look-ups into ``metrics/summary.csv`` and ``metrics/long.csv`` of one run."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.summary: dict[tuple[str, str, str, str], Stat] = {}
        for r in run.read_csv("metrics/summary.csv"):
            self.summary[(r["method"], r["split"], r["metric"], r["class"])] = Stat(
                _float(r["mean"]), _float(r["sd"]), int(r["n_folds"] or 0)
            )
        self.long = run.read_csv("metrics/long.csv")

    def get(self, method: str, split: str, metric: str, cls: str = "") -> Stat | None:
        return self.summary.get((method, split, metric, cls))

    def methods(self, split: str) -> list[str]:
        """Methods with metrics on ``split``, in run order."""
        have = {m for (m, s, _, _) in self.summary if s == split}
        return [m for m in self.run.methods() if m in have] + sorted(have - set(self.run.methods()))

    def splits(self) -> list[str]:
        have = {s for (_, s, _, _) in self.summary}
        order = list(self.run.splits())
        return [s for s in order if s in have] + sorted(have - set(order))

    def support_total(self, method: str, split: str) -> dict[str, int]:
        """class -> test images summed over folds (each image is tested once per split)."""
        out: dict[str, int] = {}
        for r in self.long:
            if r["method"] == method and r["split"] == split and r["metric"] == "support":
                out[r["class"]] = out.get(r["class"], 0) + int(round(float(r["value"])))
        return out

    def n_folds(self, method: str, split: str) -> int:
        return len({r["fold"] for r in self.long if r["method"] == method and r["split"] == split})


def fmt_stat(stat: Stat | None, digits: int = 2) -> str:
    """``0.91 ± 0.02`` (mean ± sd over folds), just ``0.91`` for one fold, ``–`` when missing."""
    if stat is None or not math.isfinite(stat.mean):
        return "–"
    if stat.n_folds > 1 and math.isfinite(stat.sd):
        return f"{stat.mean:.{digits}f} ± {stat.sd:.{digits}f}"
    return f"{stat.mean:.{digits}f}"


def redraw(run_dir: str | Path, reporters: Sequence[str | Any] | None = None) -> list[Path]:
    """Recompute the metrics of a run and run its reporters.

    Parameters
    ----------
    run_dir
        The run directory.
    reporters
        Reporter names (from the registry) or reporter objects; by default those listed in
        run.json (``reporters``), else :data:`DEFAULT_REPORTERS`. ``html`` runs last so that
        it links everything the others wrote.

    Returns
    -------
    list of Path
        Every file written.
    """
    from cytocompare.metrics import evaluate_run

    run = RunDir(run_dir)
    evaluate_run(run)
    if reporters is None:
        reporters = run.info.get("reporters") or list(DEFAULT_REPORTERS)
    items = list(reporters)
    items.sort(key=lambda r: r == "html" or type(r).__name__ == "HtmlReporter")  # stable: html last
    written: list[Path] = []
    registry = None
    for item in items:
        if isinstance(item, str):
            if registry is None:
                from cytocompare.plugins import get_registry

                registry = get_registry()
            item = registry.create("reporter", item)
        written.extend(item.report(run.path))
    return written


__all__ = ["DEFAULT_REPORTERS", "MetricsView", "Stat", "ensure_metrics", "fmt_stat", "redraw"]
