"""The paired-statistics reporter (``paired-stats``): overall and per-class comparisons of methods.

``metrics/paired_<split>.csv`` / ``paired_<split>.md`` hold balanced accuracy per pair of methods
(:func:`cytocompare.evaluation.paired_comparisons`); ``metrics/paired_per_class_<split>.csv`` and
the "Per class" section of ``paired_<split>.md`` hold per-class recall differences
(:func:`cytocompare.evaluation.paired_per_class`), drawn as intervals in
``charts/paired_per_class_<split>.png`` (:func:`cytocompare.reports.charts.draw_paired_per_class`). :func:`describe_per_class` turns one per-class
row into the sentence a reader sees; a chart or page can use it and the rows directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from cytocompare.base import BaseComponent
from cytocompare.feature_failures import FEATURE_FAILURES_FILE
from cytocompare.reports import class_names, ensure_metrics
from cytocompare.reports.charts import draw_paired_per_class

#: Holm-corrected p below this: "beats"
ALPHA = 0.05


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _fmt_p(p: float) -> str:
    if not isinstance(p, float) or not math.isfinite(p):
        return "–"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _fmt_ci(diff: float, low: float, high: float) -> str:
    d, lo, hi = (no_negative_zero(x) for x in (diff, low, high))
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{d:.2f} [no interval]"
    return f"{d:.2f} [{lo:.2f}, {hi:.2f}]"


def no_negative_zero(x: float, digits: int = 2) -> float:
    """``x`` rounded to ``digits``, with -0.0 made 0.0: a bootstrap bound of -1e-17 is printed
    "0.00", not "-0.00" (which reads as a negative difference)."""
    return round(x, digits) + 0.0 if math.isfinite(x) else x


def _number(value: object) -> float:
    """A value of a per-class row as a float: rows read back from the CSV hold "" where the
    statistic is undefined (e.g. no bootstrap interval for a class with one image), which is NaN."""
    return float("nan") if value is None or value == "" else float(value)  # type: ignore[arg-type]


def describe_per_class(row: Mapping, names: Mapping[str, str] | None = None, *, alpha: float = ALPHA) -> str:
    """One per-class row (keys of :data:`cytocompare.stats.PAIRED_PER_CLASS_COLUMNS`) in words.

    The method with the higher recall comes first and the difference and its CI are given from
    its side: "classical beats colour-logreg on EOS (eosinophil) by 0.12 [0.05, 0.19],
    Holm p = 0.003 (n = 40)" when the Holm-corrected McNemar p is below ``alpha``, otherwise
    "... is ahead of ... by ..., not a clear difference (Holm p = ...)", or "... and ... do
    equally well on ..." when the recalls are equal.
    """
    code = str(row["class"])
    name = (names or {}).get(code, code)
    label = f"{code} ({name})" if name and name != code else code
    a, b = str(row["method_a"]), str(row["method_b"])
    diff, low, high = _number(row["diff"]), _number(row["ci_low"]), _number(row["ci_high"])
    p_holm = _number(row["p_holm"])
    p = _fmt_p(p_holm)
    n = f"n = {int(row['n'])}"
    if diff == 0:
        return f"{a} and {b} do equally well on {label} (recall {float(row['recall_a']):.2f}; Holm p = {p}, {n})"
    if diff < 0:
        a, b, diff, low, high = b, a, -diff, -high, -low
    text = _fmt_ci(diff, low, high)
    if p_holm < alpha:
        return f"{a} beats {b} on {label} by {text}, Holm p = {p} ({n})"
    return f"{a} is ahead of {b} on {label} by {text}, not a clear difference (Holm p = {p}, {n})"


def _per_class_lines(rows: list[dict], names: Mapping[str, str], split: str) -> list[str]:
    lines = [
        "## Per class", "",
        "Recall of each class on the images of that class both methods were tested on (n). "
        "a − b with a 95% CI from a paired bootstrap over those images (the same resample for both "
        "methods, stratified by class: each class is resampled within itself; percentile interval, "
        "`scipy.stats.bootstrap`). p: exact McNemar test on the images of the class (b = only a right, "
        "c = only b right), Holm-corrected across the classes of one pair and criterion. "
        f"\"Beats\" means Holm p < {ALPHA}. The intervals are per class, not corrected for the number of "
        "classes, and a percentile bootstrap on few images is on the narrow side: an interval that "
        "misses 0 with a large Holm p is not a clear difference. "
        f"[metrics/paired_per_class_{split}.csv](metrics/paired_per_class_{split}.csv) also gives "
        "Newcombe's square-and-add interval (Wilson-based, no resampling) beside the bootstrap one.", "",
    ]
    for criterion in ("strict", "tolerant"):
        sub = [r for r in rows if r["criterion"] == criterion]
        if not sub:
            continue
        lines += [f"### {criterion.capitalize()}", ""]
        clear = [r for r in sub if math.isfinite(r["p_holm"]) and r["p_holm"] < ALPHA]
        if clear:
            lines += [f"* {describe_per_class(r, names)}" for r in clear] + [""]
        else:
            lines += [f"No class differs clearly between any two methods (every Holm p ≥ {ALPHA}).", ""]
            biggest = max((r for r in sub if r["diff"] != 0), key=lambda r: abs(r["diff"]), default=None)
            if biggest is not None:
                lines += [f"The largest difference: {describe_per_class(biggest, names)}.", ""]
        header = ["A", "B", "Class", "n", "recall a", "recall b", "a − b [95% CI]", "McNemar b/c", "p (Holm)"]
        md_rows = [[
            r["method_a"], r["method_b"],
            r["class"] + (f" ({names[r['class']]})" if names.get(r["class"], r["class"]) != r["class"] else ""),
            str(r["n"]), f"{r['recall_a']:.3f}", f"{r['recall_b']:.3f}",
            f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if math.isfinite(r["ci_low"])
            else f"{r['diff']:+.3f} [–]",
            f"{r['mcnemar_b']}/{r['mcnemar_c']}", f"{_fmt_p(r['p'])} ({_fmt_p(r['p_holm'])})",
        ] for r in sub]
        lines += _md_table(header, md_rows) + [""]
    return lines


class PairedStatsReporter(BaseComponent):
    """``metrics/paired_<split>.csv``, ``metrics/paired_per_class_<split>.csv`` and
    ``paired_<split>.md``: every pair of methods, overall and per class.

    Strict and tolerant criteria (column ``criterion``); see
    :func:`cytocompare.evaluation.paired_comparisons` and
    :func:`cytocompare.evaluation.paired_per_class` for the columns.
    """

    def __init__(self, n_boot: int = 2000, seed: int = 0) -> None:
        self.n_boot = n_boot
        self.seed = seed

    def report(self, run_dir: Path) -> list[Path]:
        from cytocompare.evaluation import paired_comparisons, paired_per_class
        from cytocompare.stats import PAIRED_COLUMNS, PAIRED_PER_CLASS_COLUMNS

        run = ensure_metrics(run_dir)
        written: list[Path] = []
        for split in run.splits():
            rows: list[dict] = []
            per_class: list[dict] = []
            for criterion in ("strict", "tolerant"):
                kw = {"n_boot": self.n_boot, "seed": self.seed, "tolerant": criterion == "tolerant"}
                for r in paired_comparisons(run, split, **kw):
                    rows.append({"criterion": criterion, **r})
                for r in paired_per_class(run, split, **kw):
                    per_class.append({"criterion": criterion, **r})
            if not rows:
                continue
            cols = ["criterion"] + PAIRED_COLUMNS
            written.append(run.write_csv(f"metrics/paired_{split}.csv", cols, ([r[c] for c in cols] for r in rows)))
            pc_cols = ["criterion"] + PAIRED_PER_CLASS_COLUMNS
            written.append(run.write_csv(f"metrics/paired_per_class_{split}.csv", pc_cols,
                                         ([r[c] for c in pc_cols] for r in per_class)))
            chart = draw_paired_per_class(run, split, alpha=ALPHA)  # drawn from the CSV just written
            if chart is not None:
                written.append(chart)
            lines = [
                f"# Paired comparisons — split `{split}`", "",
                "Balanced accuracy on the test images both methods were tested on (pooled over folds; "
                "n; images only one of them was tested on, e.g. cells it skipped because their "
                "features failed, are counted under 'only a / only b' and left out). CI: paired "
                "bootstrap 95% percentile interval of a − b. McNemar: exact binomial below 25 "
                "discordant images, else chi-square with continuity correction. Fold t: paired "
                "t-test of per-fold balanced accuracy (Wilcoxon p cannot go below 0.0625 with 5 "
                "folds). Holm: corrected across the pairs of one criterion.", "",
            ]
            header = ["Criterion", "A", "B", "n", "only a / only b", "BA a", "BA b", "a − b [95% CI]", "McNemar b/c",
                      "McNemar p (Holm)", "fold t p (Holm)", "Wilcoxon p"]
            md_rows = [[
                r["criterion"], r["method_a"], r["method_b"], str(r["n_images"]),
                f"{r['n_only_a']} / {r['n_only_b']}",
                f"{r['balanced_accuracy_a']:.3f}", f"{r['balanced_accuracy_b']:.3f}",
                f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]",
                f"{r['mcnemar_b']}/{r['mcnemar_c']}",
                f"{_fmt_p(r['mcnemar_p'])} ({_fmt_p(r['mcnemar_p_holm'])})",
                f"{_fmt_p(r['ttest_p'])} ({_fmt_p(r['ttest_p_holm'])})",
                _fmt_p(r["wilcoxon_p"]),
            ] for r in rows]
            lines += _md_table(header, md_rows) + [""]
            partial = [r for r in rows if r["criterion"] == "strict" and (r["n_only_a"] or r["n_only_b"])]
            if partial:
                lines += ["Not every pair was tested on the same images (n counts the shared ones, the only ones "
                          "compared): " + "; ".join(
                              f"{r['method_a']} alone on {r['n_only_a']}, {r['method_b']} alone on {r['n_only_b']}"
                              for r in partial) + f" (see {FEATURE_FAILURES_FILE}).", ""]
            if per_class:
                names = class_names(run, sorted({r["class"] for r in per_class}))
                lines += _per_class_lines(per_class, names, split)
            written.append(run.write_text(f"paired_{split}.md", "\n".join(lines)))
        return written
