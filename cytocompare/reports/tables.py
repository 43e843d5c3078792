"""Table-1-style Markdown/CSV tables (the paired statistics: :mod:`cytocompare.reports.paired`)."""

from __future__ import annotations

import math
from pathlib import Path

from cytocompare.base import BaseComponent
from cytocompare.errors import ProtocolError
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
            written += self._paper_layout(run, view, split, labels)
        return written

    def _paper_layout(self, run: RunDir, view: MetricsView, split: str, tested: list[str]) -> list[Path]:
        """``table1_paper_<split>.md`` and ``metrics/table1_paper_<split>.csv``: Table 1 as published.

        Every class of the run (run.json ``labels``, also those this split did not test) in the
        scheme's lineage order with its full name (classes the scheme lacks after them); precision and recall tolerant then strict, mean ± sd over folds;
        the pooled Wilson interval of recall; "–" where the split did not test a class. When the
        class scheme carries ``published_table1`` its values are printed beside ours with the
        difference, marked "published (<status>)" with the scheme's ``published_table1.status``.
        """
        from cytocompare.classes import load_scheme
        from cytocompare.evaluation import display_order
        from cytocompare.reports.comparison import POOLED_NOTE, fmt_interval, pooled_recall, wilson_interval

        try:
            scheme = load_scheme(run.info.get("class_scheme", "matek2021"))
        except (ProtocolError, OSError):
            scheme = None
        present = set(run.labels()) | set(tested)  # the run's classes: dropped from this split or not
        order = [c for c in scheme.lineage_order if c in present] if scheme is not None else []
        extra = [c for c in display_order(run, present) if c not in order]
        rows_cls = order + extra
        names = class_names(run, rows_cls)
        lineage = {c.code: c.lineage for c in scheme.classes} if scheme is not None else {}
        published = (scheme.published_table1 or {}) if scheme is not None else {}
        pub_vals = published.get("classes", {}) if published else {}
        status = " ".join(str(published.get("status") or "unverified").split()) if published else ""
        metrics = ("precision_tolerant", "recall_tolerant", "precision_strict", "recall_strict")
        short = {"precision_tolerant": "P tol", "recall_tolerant": "R tol",
                 "precision_strict": "P strict", "recall_strict": "R strict"}
        d = self.digits
        lines = [f"# Table 1 (paper layout) — split `{split}`", "", _split_line(run, split, view), "",
                 "Classes in lineage order; \"–\": this split did not test the class (no value, not 0). "
                 f"R strict / R tol 95% CI: the {POOLED_NOTE}.", ""]
        if pub_vals:
            lines += [f"Beside ours: **{published.get('method', 'published values')}, published ({status})**. Sources: " + "; ".join(f"{k}: {' '.join(str(v).split())}"
                                                           for k, v in (published.get("sources") or {}).items())
                      + (f". Checked: {' '.join(str(published['checked']).split())}" if published.get("checked") else "")
                      + f". Caveat: {' '.join(str(published.get('caveat', '')).split())}. "
                      "Cells: ours / published (ours − published).", ""]
        csv_rows: list[list] = []
        for method in view.methods(split):
            support = view.support_total(method, split)
            pooled = {crit: pooled_recall(view, method, split, crit) for crit in ("strict", "tolerant")}
            header = ["Class", "Name", "n images"] + [short[m] for m in metrics] + ["R strict 95% CI", "R tol 95% CI"]
            rows, pub_rows = [], []
            for c in rows_cls:
                is_tested = c in tested and support.get(c, 0) > 0
                stats = [view.get(method, split, m, c) if is_tested else None for m in metrics]
                ci = {}
                for crit in ("strict", "tolerant"):
                    k, n = pooled[crit].get(c, (0, 0)) if is_tested else (0, 0)
                    ci[crit] = (k, n, *wilson_interval(k, n))
                rows.append([c, names.get(c, c), str(support.get(c, 0)) if is_tested else "–"]
                            + [fmt_stat(st, d) for st in stats]
                            + [fmt_interval(ci["strict"][2], ci["strict"][3], d),
                               fmt_interval(ci["tolerant"][2], ci["tolerant"][3], d)])
                pub = pub_vals.get(c, {}) or {}
                pub_cells, pub_csv = [], []
                for m, st in zip(metrics, stats, strict=True):
                    ours = st.mean if st is not None else math.nan
                    ref = float(pub[m]) if m in pub else math.nan
                    diff = ours - ref if math.isfinite(ours) and math.isfinite(ref) else math.nan
                    pub_csv += [ref, diff]
                    o = f"{ours:.{d}f}" if math.isfinite(ours) else "–"
                    r = f"{ref:.{d}f}" if math.isfinite(ref) else "–"
                    pub_cells.append(f"{o} / {r}" + (f" ({diff:+.{d}f})" if math.isfinite(diff) else ""))
                pub_rows.append([c, names.get(c, c)] + pub_cells)
                csv_rows.append([method, c, names.get(c, c), lineage.get(c, ""), int(is_tested),
                                 support.get(c, 0) if is_tested else 0]
                                + [v for st in stats for v in ((st.mean, st.sd if st.n_folds > 1 else math.nan)
                                                               if st is not None else (math.nan, math.nan))]
                                + [v for crit in ("strict", "tolerant") for v in
                                   ((ci[crit][0], ci[crit][1], ci[crit][2], ci[crit][3]) if ci[crit][1]
                                    else ("", "", math.nan, math.nan))]
                                + (pub_csv if pub_vals else []))
            lines += [f"## {method}", ""] + _md_table(header, rows) + [""]
            if pub_vals:
                lines += [f"### {method} beside {published.get('method', 'the published values')} "
                          f"(published, {status})", ""]
                lines += _md_table(["Class", "Name"] + [f"{short[m]}: ours / published (Δ)" for m in metrics],
                                   pub_rows) + [""]
        csv_header = (["method", "class", "name", "lineage", "tested", "n_images"]
                      + [f"{m}_{x}" for m in metrics for x in ("mean", "sd")]
                      + [f"recall_{crit}_{x}" for crit in ("strict", "tolerant")
                         for x in ("pooled_correct", "pooled_n", "wilson_low", "wilson_high")]
                      + ([f"{m}_{x}" for m in metrics for x in ("published", "minus_published")] if pub_vals else []))
        return [run.write_text(f"table1_paper_{split}.md", "\n".join(lines)),
                run.write_csv(f"metrics/table1_paper_{split}.csv", csv_header, csv_rows)]


# moved to cytocompare.reports.paired (issue 11); kept importable from here
from cytocompare.reports.paired import PairedStatsReporter  # noqa: E402,F401
