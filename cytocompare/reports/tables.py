"""Table-1-style Markdown/CSV tables (the paired statistics: :mod:`cytocompare.reports.paired`)."""

from __future__ import annotations

import math
from pathlib import Path

from cytocompare.base import BaseComponent
from cytocompare.feature_failures import FEATURE_FAILURES_FILE, failure_note
from cytocompare.reports import MetricsView, class_names, ensure_metrics, fmt_stat, tolerance_note
from cytocompare.rundir import RunDir

_PR = ("precision_strict", "precision_tolerant", "recall_strict", "recall_tolerant")
_SUMMARY = (
    "balanced_accuracy_strict", "balanced_accuracy_tolerant",
    "macro_f1_strict", "macro_f1_tolerant",
    "weighted_f1_strict", "weighted_f1_tolerant",
    "accuracy_strict", "accuracy_tolerant",
)
_EXTERNAL = ("coverage", "accuracy_called_strict", "accuracy_called_tolerant")


def _title(metric: str) -> str:
    return metric.replace("_", " ").replace("f1", "F1").replace("macro F1", "macro-F1")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _split_line(run: RunDir, split: str, view: MetricsView) -> str:
    desc = run.splits().get(split, {})
    kind = desc.get("kind", "?")
    methods = view.methods(split)
    n_folds = max((view.n_folds(m, split) for m in methods), default=0)
    return (
        f"Split `{split}`: {kind}, {n_folds} fold{'s' if n_folds != 1 else ''} "
        f"(values are mean ± sd over folds{'' if n_folds > 1 else '; one fold, so no sd'}). "
        + tolerance_note(run)
    )


class Table1Reporter(BaseComponent):
    """``table1_<split>.md`` and ``metrics/table1_<split>.csv``: the paper's Table 1 per method.

    Rows are the classes the split tested (:func:`cytocompare.evaluation.split_labels`, in run
    label order) with test images summed over folds and strict/tolerant
    precision and recall as mean ± sd over folds; a summary block gives balanced accuracy,
    macro-F1, weighted F1 and accuracy (strict and tolerant) per method.
    """

    def __init__(self, digits: int = 2) -> None:
        self.digits = digits

    def report(self, run_dir: Path) -> list[Path]:
        from cytocompare.evaluation import split_labels

        run = ensure_metrics(run_dir)
        view = MetricsView(run)
        written: list[Path] = []
        for split in view.splits():
            labels = split_labels(run, split)  # the classes this split tested (issue 8.1)
            names = class_names(run, labels)
            methods = view.methods(split)
            external = run.splits().get(split, {}).get("kind") == "external"
            lines = [f"# Table 1 — split `{split}`", "", _split_line(run, split, view), ""]
            note = failure_note(run)
            if note:  # cells whose features failed (issue 8.3): how many, what was done, where listed
                lines += [note.replace(FEATURE_FAILURES_FILE, f"[{FEATURE_FAILURES_FILE}]({FEATURE_FAILURES_FILE})"), ""]
            csv_rows: list[list] = []
            for method in methods:
                support = view.support_total(method, split)
                lines += [f"## {method}", ""]
                rows = []
                for c in labels:
                    stats = [view.get(method, split, m, c) for m in _PR]
                    cells = [fmt_stat(s, self.digits) for s in stats]
                    if support.get(c, 0) == 0:  # no test images of c: recall undefined, not 0
                        cells[2:] = ["–", "–"]
                    rows.append([c, names.get(c, c), str(support.get(c, 0))] + cells)
                    csv_rows.append([method, c, names.get(c, c), support.get(c, 0)] + [
                        v for s in stats for v in ((s.mean, s.sd) if s else (math.nan, math.nan))
                    ])
                header = ["Class", "Name", "n images"] + [_title(m) for m in _PR]
                lines += _md_table(header, rows) + [""]
            lines += ["## Summary", ""]
            summary_metrics = list(_SUMMARY) + (list(_EXTERNAL) if external else [])
            rows = [[m] + [fmt_stat(view.get(m, split, s), self.digits) for s in summary_metrics] for m in methods]
            lines += _md_table(["Method"] + [_title(s) for s in summary_metrics], rows) + [""]
            written.append(run.write_text(f"table1_{split}.md", "\n".join(lines)))
            csv_header = ["method", "class", "name", "n_images"] + [f"{m}_{x}" for m in _PR for x in ("mean", "sd")]
            written.append(run.write_csv(f"metrics/table1_{split}.csv", csv_header, csv_rows))
        return written


# moved to cytocompare.reports.paired (issue 11); kept importable from here
from cytocompare.reports.paired import PairedStatsReporter  # noqa: E402,F401
