"""Methods from different splits of the same data side by side (paper Fig. 3B), and the pooled
Wilson interval of per-class recall that goes next to the fold mean ± sd.

The protocol declares each comparison (``comparisons: {fig3b: {krappe-features-svm: holdout70,
resnext50: cv5}}``); :class:`ComparisonChartReporter` writes ``charts/compare_<name>.png``,
``metrics/compare_<name>.csv`` and ``compare_<name>.md`` for each.

Pooled interval: the test cells of one class summed over the folds of a split (in k-fold each
image is tested once), ``k`` of them recognised; the 95 % Wilson score interval of ``k / n``
(:func:`scipy.stats.binomtest` ``.proportion_ci(method="wilson")``). With 8 cells of a class over
5 folds the sd over folds says little (it is 0 when the folds all get the same fraction); the
pooled interval says how sure ``k / n`` is.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cytocompare.base import BaseComponent
from cytocompare.reports import MetricsView, class_names, ensure_metrics, fmt_stat, tolerance_note
from cytocompare.rundir import RunDir

CRITERIA = ("strict", "tolerant")
#: how the reports name the pooled interval
POOLED_NOTE = ("pooled 95% Wilson score interval of recall over the test cells of the class pooled over the "
               "folds (k recognised of n)")


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials; (nan, nan) when ``n == 0``."""
    if n <= 0:
        return math.nan, math.nan
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def pooled_recall(view: MetricsView, method: str, split: str, criterion: str) -> dict[str, tuple[int, int]]:
    """class -> (cells recognised, cells tested) summed over the folds of ``split``, from
    ``metrics/long.csv`` (recall × support per fold: exact counts, rounded from the float)."""
    support: dict[tuple[str, str], float] = {}
    recall: dict[tuple[str, str], float] = {}
    for r in view.long:
        if r["method"] != method or r["split"] != split or r["class"] == "":
            continue
        key = (r["fold"], r["class"])
        if r["metric"] == "support":
            support[key] = float(r["value"])
        elif r["metric"] == f"recall_{criterion}":
            recall[key] = float(r["value"]) if r["value"] != "" else math.nan
    out: dict[str, tuple[int, int]] = {}
    for (fold, cls), n in support.items():
        n_i = int(round(n))
        if n_i == 0:
            continue
        rec = recall.get((fold, cls), math.nan)
        k_i = int(round(rec * n_i)) if math.isfinite(rec) else 0
        k0, n0 = out.get(cls, (0, 0))
        out[cls] = (k0 + k_i, n0 + n_i)
    return out


def fmt_interval(lo: float, hi: float, digits: int = 2) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "–"
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def protocol_comparisons(run: RunDir) -> dict[str, dict[str, str]]:
    """The ``comparisons`` of the run's ``protocol.yaml`` (empty when it has none)."""
    proto = run.read_protocol() or {}
    comps = proto.get("comparisons") or {}
    return {str(k): {str(m): str(s) for m, s in (v or {}).items()} for k, v in comps.items()}


class ComparisonChartReporter(BaseComponent):
    """``charts/compare_<name>.png``, ``metrics/compare_<name>.csv``, ``compare_<name>.md``: per-class
    recall (strict and tolerant) of methods taken from different splits of the same data.

    Every class that any compared split tested is shown; a method whose split did not test a class
    gets no bar there ("–" in the table). Bars are labelled ``method (split)``; whiskers are the
    sd over folds, where the split has folds, and a grey band behind them the pooled Wilson
    interval (:data:`POOLED_NOTE`), also in the table. Members whose method has no results on its split are left out, and said so.
    """

    def __init__(self, width: float = 14.0, height: float = 8.0, dpi: int = 120, digits: int = 2) -> None:
        self.width = width
        self.height = height
        self.dpi = dpi
        self.digits = digits

    def report(self, run_dir: Path) -> list[Path]:
        run = ensure_metrics(run_dir)
        view = MetricsView(run)
        written: list[Path] = []
        for name, members in protocol_comparisons(run).items():
            written += self.compare(run, view, name, members)
        return written

    def compare(self, run: RunDir, view: MetricsView, name: str, members: dict[str, str]) -> list[Path]:
        from cytocompare.evaluation import display_order, split_labels

        present = [(m, s) for m, s in members.items() if m in view.methods(s)]
        missing = [(m, s) for m, s in members.items() if (m, s) not in present]
        if not present:
            return []
        tested = {s: split_labels(run, s) for s in {s for _, s in present}}
        labels = display_order(run, {c for cs in tested.values() for c in cs})
        names = class_names(run, labels)
        kinds = run.splits()
        rows: list[list] = []
        data: dict[tuple[str, str, str], dict] = {}
        for m, s in present:
            n_folds = view.n_folds(m, s)
            support = view.support_total(m, s)
            for crit in CRITERIA:
                pooled = pooled_recall(view, m, s, crit)
                for c in labels:
                    stat = view.get(m, s, f"recall_{crit}", c) if c in tested[s] else None
                    k, n = pooled.get(c, (0, 0)) if c in tested[s] else (0, 0)
                    lo, hi = wilson_interval(k, n)
                    mean = stat.mean if stat is not None else math.nan
                    sd = stat.sd if stat is not None and stat.n_folds > 1 else math.nan
                    cell = {"stat": stat, "mean": mean, "sd": sd, "k": k, "n": n, "lo": lo, "hi": hi}
                    data[(m, crit, c)] = cell
                    rows.append([name, m, s, kinds.get(s, {}).get("kind", ""), n_folds, crit, c, names.get(c, c),
                                 support.get(c, 0) if c in tested[s] else 0, int(c in tested[s]), mean, sd,
                                 k if n else "", n if n else "", k / n if n else math.nan, lo, hi])
        header = ["comparison", "method", "split", "kind", "n_folds", "criterion", "class", "name", "n_images",
                  "tested", "recall_mean", "recall_sd", "pooled_correct", "pooled_n", "pooled_recall",
                  "wilson_low", "wilson_high"]
        out = [run.write_csv(f"metrics/compare_{_safe(name)}.csv", header, rows)]
        out.append(self._markdown(run, view, name, present, missing, labels, names, tested, data))
        out.append(self._chart(run, view, name, present, missing, labels, tested, data))
        return out

    @staticmethod
    def _label(run: RunDir, view: MetricsView, m: str, s: str) -> str:
        return f"{m} ({s})"

    def _markdown(self, run, view, name, present, missing, labels, names, tested, data) -> Path:
        from cytocompare.reports.tables import _md_table

        desc = "; ".join(f"`{m}` on `{s}` ({run.splits().get(s, {}).get('kind', '?')}, "
                         f"{view.n_folds(m, s)} fold{'s' if view.n_folds(m, s) != 1 else ''})" for m, s in present)
        lines = [f"# Comparison `{name}` — per-class recall across splits", "",
                 f"Methods: {desc}. Each cell: recall as mean ± sd over the folds of that method's split "
                 f"(one fold: no sd), then the {POOLED_NOTE}. \"–\": that split did not test the class. "
                 + tolerance_note(run), ""]
        if missing:
            lines += ["Not in this comparison (no results on that split): "
                      + ", ".join(f"`{m}` on `{s}`" for m, s in missing) + ".", ""]
        for crit in CRITERIA:
            lines += [f"## {crit.capitalize()} recall", ""]
            header = ["Class", "Name"] + [f"{m} ({s}): n, recall [95% CI]" for m, s in present]
            md_rows = []
            for c in labels:
                cells = []
                for m, s in present:
                    d = data[(m, crit, c)]
                    if c not in tested[s]:
                        cells.append("–")
                    else:
                        cells.append(f"{d['n']}: {fmt_stat(d['stat'], self.digits)} "
                                     f"{fmt_interval(d['lo'], d['hi'], self.digits)}")
                md_rows.append([c, names.get(c, c)] + cells)
            lines += _md_table(header, md_rows) + [""]
        return run.write_text(f"compare_{_safe(name)}.md", "\n".join(lines))

    def _chart(self, run, view, name, present, missing, labels, tested, data) -> Path:
        from cytocompare.reports.charts import _pyplot, style_recall_axis

        plt = _pyplot()
        x = np.arange(len(labels))
        n_m = len(present)
        group = 0.8
        width = group / max(n_m, 1)
        colors = plt.get_cmap("tab10" if n_m <= 10 else "tab20").colors
        fig, axes = plt.subplots(2, 1, figsize=(self.width, self.height), sharex=True, constrained_layout=True)
        for ax, crit in zip(axes, CRITERIA, strict=True):
            for j, (m, s) in enumerate(present):
                absent = np.array([c not in tested[s] for c in labels])
                means = np.array([data[(m, crit, c)]["mean"] for c in labels], dtype=float)
                sds = np.array([data[(m, crit, c)]["sd"] for c in labels], dtype=float)
                means = np.where(absent, 0.0, np.nan_to_num(means))
                sds = np.where(absent | ~np.isfinite(sds), 0.0, sds)
                yerr = np.vstack([np.minimum(sds, means), np.minimum(sds, 1.0 - means)])
                yerr[:, absent] = np.nan
                offs = x - group / 2 + width * (j + 0.5)
                folds = view.n_folds(m, s)
                ax.bar(offs, np.where(absent, np.nan, means), width=width * 0.95, color=colors[j % len(colors)],
                       label=f"{m} ({s}{', sd over %d folds' % folds if folds > 1 else ', 1 fold'})",
                       yerr=yerr if folds > 1 else None, capsize=max(1.0, 6.0 / n_m),
                       error_kw={"elinewidth": 0.9, "ecolor": "0.2"})
                lo = np.array([data[(m, crit, c)]["lo"] for c in labels], dtype=float)
                hi = np.array([data[(m, crit, c)]["hi"] for c in labels], dtype=float)
                ok = np.isfinite(lo) & np.isfinite(hi) & ~absent
                # the pooled Wilson interval, a wide grey band behind the sd whiskers (a one-fold
                # holdout has no sd, but its pooled interval says how sure its value is)
                ax.vlines(offs[ok], lo[ok], hi[ok], colors="0.35", linewidth=max(2.0, 18.0 * width), alpha=0.35,
                          zorder=2.5)
                for xi in offs[absent]:  # say where a split did not test the class
                    ax.text(xi, 0.02, "not tested", ha="center", va="bottom", fontsize=7, color="0.35",
                            rotation=90)
            style_recall_axis(ax, crit, len(labels))
        axes[1].set_xticks(x)
        names = class_names(run, labels)
        axes[1].set_xticklabels([f"{c}\n{names.get(c, c)}" if names.get(c, c) != c else c for c in labels],
                                fontsize=8, rotation=90 if len(labels) > 12 else 0)
        axes[0].tick_params(labelbottom=False)
        from matplotlib.lines import Line2D

        handles, texts = axes[0].get_legend_handles_labels()
        handles += [Line2D([], [], color="0.2", linewidth=0.9),
                    Line2D([], [], color="0.35", alpha=0.35, linewidth=6)]
        texts += ["sd over folds", "pooled 95% Wilson interval"]
        axes[0].legend(handles, texts, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=9, frameon=False,
                       title="method (split)")
        fig.suptitle(f"Per-class recall — comparison {name} (whiskers: sd over folds, clipped to [0, 1]; grey band: "
                     "pooled 95% Wilson interval; no bar: not tested on that split)", fontsize=11)
        path = run.path / "charts" / f"compare_{_safe(name)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=self.dpi)
        plt.close(fig)
        return path
