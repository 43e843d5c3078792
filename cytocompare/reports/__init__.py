"""Reports of a run directory: tables (CSV, Markdown), charts (matplotlib), index.html.

Reporters read ``metrics/*.csv`` (computed by :func:`cytocompare.evaluation.evaluate_run` when
missing) and the predictions; :func:`cytocompare.evaluation.evaluate_and_report` recomputes the
metrics and runs them all (``cytocompare run`` and ``cytocompare report RUN_DIR``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cytocompare.errors import ProtocolError
from cytocompare.rundir import RunDir


def ensure_metrics(run_dir: str | Path | RunDir) -> RunDir:
    """The run directory, with ``metrics/long.csv`` and ``summary.csv`` computed if missing."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not (run.path / "metrics" / "long.csv").is_file() or not (run.path / "metrics" / "summary.csv").is_file():
        from cytocompare.evaluation import evaluate_run

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


def _inferred_from(run: RunDir) -> str:
    """How the class scheme's pairs were inferred ("" when the scheme gives them as published).

    From run.json (``tolerance_inferred_from``), else from the scheme run.json names
    (``class_scheme``; matek2021 when absent, the scheme of the runs that recorded neither).
    """
    info = run.info
    if "tolerance_inferred_from" in info:
        return str(info["tolerance_inferred_from"] or "")
    from cytocompare.classes import load_scheme

    try:
        return load_scheme(info.get("class_scheme", "matek2021")).tolerance_inferred_from
    except (ProtocolError, OSError):  # a scheme file that moved since the run: claim nothing
        return ""


def class_names(run: RunDir, codes: list[str]) -> dict[str, str]:
    """code -> display name: run.json ``class_names``, else the class scheme's name (a class that
    run.json does not list, e.g. one dropped from another split), else the code itself."""
    names = run.scheme_names()
    missing = [c for c in codes if names.get(c, c) == c]
    if missing:
        from cytocompare.classes import load_scheme

        try:
            scheme = load_scheme(run.info.get("class_scheme", "matek2021"))
            names |= {c: scheme.get(c).name for c in missing if c in scheme.codes}
        except (ProtocolError, OSError, ValueError, KeyError):
            pass
    return {c: names.get(c, c) for c in codes}


def tolerance_pairs_text(run: RunDir) -> str:
    """``BLA–PMO, PMO–MYB`` (sorted), or ``none``."""
    return ", ".join(f"{a}–{b}" for a, b in sorted(sorted(p) for p in run.tolerated_pairs())) or "none"


def tolerance_note(run: RunDir) -> str:
    """One sentence on which confusions the tolerant metrics forgive and where that list comes from.

    Only a scheme whose map is inferred gets the INFERRED warning; pairs given by the protocol and
    an empty map say so instead.
    """
    source = run.tolerance_source()
    pairs = tolerance_pairs_text(run)
    if source == "none" or not run.tolerated_pairs():
        return "No tolerance pairs: tolerant = strict."
    if source == "protocol":
        return f"Tolerant metrics forgive the pairs {pairs}; tolerance pairs given by the protocol."
    if source == "scheme":  # the class scheme's default map: say so if the scheme says it is inferred
        inferred = _inferred_from(run)
        if inferred:
            return f"Tolerant metrics forgive the pairs {pairs}; this tolerance map is INFERRED from {inferred}."
    return f"Tolerant metrics forgive the pairs {pairs}; tolerance pairs of the class scheme."


__all__ = ["MetricsView", "Stat", "class_names", "ensure_metrics", "fmt_stat", "tolerance_note", "tolerance_pairs_text"]
