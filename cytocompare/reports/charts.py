"""Charts: per-class recall of every method (paper Fig. 3B), confusion matrices (Fig. 2) and the
per-class paired recall differences with their intervals (a forest plot per split).

matplotlib is imported inside the functions, with the Agg backend, so that importing this
module is cheap and never needs a display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cytocompare.base import BaseComponent
from cytocompare.evaluation import display_order, pooled_predictions, run_scheme, split_labels
from cytocompare.metrics import confusion_matrix
from cytocompare.reports import MetricsView, class_names, ensure_metrics
from cytocompare.rundir import RunDir


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _recall_look(ax: Any, value_axis: str, title: str) -> None:
    """What every recall axis shares: a light grid along the value axis, behind the data; title left."""
    ax.grid(axis=value_axis, alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(title, loc="left", fontsize=11)


def style_recall_axis(ax: Any, criterion: str, n_classes: int) -> None:
    """The per-class recall axis every recall chart shares (0-1, grid, title by criterion)."""
    ax.set_ylim(0, 1.05)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel(f"recall ({criterion})")
    ax.set_xlim(-0.6, n_classes - 0.4)
    _recall_look(ax, "y", f"{criterion.capitalize()} recall per class")


def style_recall_difference_axis(ax: Any, criterion: str, n_classes: int, limit: float, title: str) -> None:
    """The recall axis turned on its side for a difference of recalls (forest plot): classes down
    the y axis (the first on top), a - b along x in [-limit, limit], 0 (no difference) marked."""
    from matplotlib.ticker import MultipleLocator

    ax.set_xlim(-limit, limit)
    ax.xaxis.set_major_locator(MultipleLocator(0.1 if limit <= 0.5 else 0.25))
    ax.set_ylim(n_classes - 0.4, -0.6)
    ax.axvline(0.0, color="0.3", linewidth=0.9, zorder=1)
    _recall_look(ax, "x", title)


def difference_limit(values: np.ndarray) -> float:
    """Half-width of a recall-difference axis: the largest |value| rounded up to 0.1 with a margin,
    between 0.2 and 1.05 (a difference of recalls lies in [-1, 1])."""
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    return float(min(1.05, max(0.2, math.ceil(top * 10 + 0.5) / 10)))


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


class RecallChartReporter(BaseComponent):
    """``charts/recall_<split>.png``: grouped bars of per-class recall, one bar per method.

    Two panels (strict, tolerant), the classes the split tested in run label order with their image counts under
    the tick labels, error bars = sd over folds.
    """

    def __init__(self, width: float = 14.0, height: float = 8.0, dpi: int = 120) -> None:
        self.width = width
        self.height = height
        self.dpi = dpi

    def report(self, run_dir: Path) -> list[Path]:
        run = ensure_metrics(run_dir)
        view = MetricsView(run)
        return [self._draw(run, view, split) for split in view.splits() if view.methods(split)]

    def _draw(self, run: RunDir, view: MetricsView, split: str) -> Path:
        plt = _pyplot()
        methods = view.methods(split)
        labels = split_labels(run, split)  # the classes this split tested
        support: dict[str, int] = {}
        for m in methods:  # every method sees the same images; take the largest count seen
            for c, n in view.support_total(m, split).items():
                support[c] = max(support.get(c, 0), n)
        x = np.arange(len(labels))
        n_m = len(methods)
        group = 0.8
        width = group / max(n_m, 1)
        colors = plt.get_cmap("tab10" if n_m <= 10 else "tab20").colors
        n_folds = max(view.n_folds(m, split) for m in methods)
        fig, axes = plt.subplots(2, 1, figsize=(self.width, self.height), sharex=True, constrained_layout=True)
        for ax, crit in zip(axes, ("strict", "tolerant"), strict=True):
            for j, m in enumerate(methods):
                stats = [view.get(m, split, f"recall_{crit}", c) for c in labels]
                means = np.array([s.mean if s else np.nan for s in stats])
                sds = np.array([s.sd if s and s.n_folds > 1 and math.isfinite(s.sd) else 0.0 for s in stats])
                offs = x - group / 2 + width * (j + 0.5)
                # a class absent from the test images has no recall (not 0): draw no bar
                absent = np.array([support.get(c, 0) == 0 for c in labels])
                means = np.where(absent, 0.0, np.nan_to_num(means))
                sds = np.where(absent, 0.0, sds)
                # recall lives in [0, 1]: clip the whiskers there instead of letting the axis cut them
                yerr = np.vstack([np.minimum(sds, means), np.minimum(sds, 1.0 - means)])
                yerr[:, absent] = np.nan  # no whisker cap on an empty slot
                if n_folds < 2:
                    yerr = None  # one fold: no sd to show
                ax.bar(offs, means, width=width * 0.95, color=colors[j % len(colors)], label=m,
                       yerr=yerr, capsize=max(1.0, 6.0 / n_m), error_kw={"elinewidth": 0.9, "ecolor": "0.2"})
            style_recall_axis(ax, crit, len(labels))
        axes[1].set_xticks(x)
        axes[1].set_xticklabels([f"{c}\nn={support.get(c, 0)}" for c in labels], fontsize=9)
        axes[0].tick_params(labelbottom=False)
        axes[0].legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=9, frameon=False, title="method")
        kind = run.splits().get(split, {}).get("kind", "")
        bars = "error bars: sd over folds, clipped to [0, 1]" if n_folds > 1 else "one fold: no error bars"
        fig.suptitle(f"Per-class recall — split {split} ({kind}, {n_folds} fold{'s' if n_folds != 1 else ''}; "
                     f"{bars})", fontsize=12)
        path = run.path / "charts" / f"recall_{_safe(split)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=self.dpi)
        plt.close(fig)
        return path


class ConfusionChartReporter(BaseComponent):
    """``charts/confusion_<method>_<split>.png``: row-normalised confusion matrix, pooled over folds.

    Rows = true class with its image count, columns = predicted class, cells in percent of the
    row. For external splits the matrix spans two class schemes (Matek et al. 2021, Fig. 4;
    :mod:`cytocompare.reports.external`): rows are the test set's own labels (``source_label``,
    images kept unmapped included), columns every code of the class scheme in lineage order with
    the no-call classes apart, cells the image counts; it also writes
    ``metrics/external_labels_<method>_<split>.csv``. A run written before test sets had
    ``source_label`` gets the plain matrix: its test classes against every predicted class.
    """

    def __init__(self, dpi: int = 120, min_percent: float = 0.5) -> None:
        self.dpi = dpi
        self.min_percent = min_percent

    def report(self, run_dir: Path) -> list[Path]:
        run = ensure_metrics(run_dir)
        splits = run.splits()
        pairs = sorted({(m, s) for m, s, _ in run.completed()},
                       key=lambda ms: (run.methods().index(ms[0]) if ms[0] in run.methods() else 1 << 30,
                                       list(splits).index(ms[1]) if ms[1] in splits else 1 << 30, ms))
        tested = {s: split_labels(run, s) for s in {s for _, s in pairs}}
        return [self._draw(run, m, s, splits.get(s, {}).get("kind", ""), tested[s]) for m, s in pairs]

    def _draw(self, run: RunDir, method: str, split: str, kind: str, tested: list[str]) -> Path:
        if kind == "external":
            drawn = self._draw_two_schemes(run, method, split)
            if drawn is not None:
                return drawn
        plt = _pyplot()
        pooled = pooled_predictions(run, method, split)
        truth, pred, n_folds = pooled.truth, pooled.prediction, len(set(pooled.folds.tolist()))
        t_set, p_set = set(truth.tolist()), set(pred.tolist())
        if kind == "external":
            rows, cols = display_order(run, t_set), display_order(run, p_set)
        else:  # the classes this split tested, and any class only predicted (train_only)
            rows = cols = display_order(run, set(tested) | t_set | p_set)
        cm = confusion_matrix(truth, pred, rows, pred_labels=cols)
        counts = cm.sum(axis=1)
        frac = confusion_matrix(truth, pred, rows, normalize="true", pred_labels=cols)
        size_w = max(6.0, 0.42 * len(cols) + 3.0)
        size_h = max(5.0, 0.42 * len(rows) + 2.2)
        fig, ax = plt.subplots(figsize=(size_w, size_h), constrained_layout=True)
        im = ax.imshow(frac * 100, cmap="Blues", vmin=0, vmax=100, aspect="auto")
        font = 8 if max(len(rows), len(cols)) <= 15 else 6.5
        for i in range(len(rows)):
            for j in range(len(cols)):
                pct = frac[i, j] * 100
                if cm[i, j] == 0 or pct < self.min_percent:
                    continue  # blank cells keep a 21x21 matrix readable
                ax.text(j, i, f"{pct:.0f}", ha="center", va="center", fontsize=font,
                        color="white" if pct > 55 else "black")
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels(cols, rotation=90, fontsize=9)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"{c} (n={int(n)})" for c, n in zip(rows, counts, strict=True)], fontsize=9)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        cb.set_label("% of true class")
        pooled = f"pooled over {n_folds} folds" if n_folds > 1 else "1 fold"
        ax.set_title(f"{method} — {split} ({kind}, {pooled}; % of each row)", fontsize=10)
        path = run.path / "charts" / f"confusion_{_safe(method)}_{_safe(split)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=self.dpi)
        plt.close(fig)
        return path

    def _draw_two_schemes(self, run: RunDir, method: str, split: str) -> Path | None:
        """Fig. 4: the external labels (rows) against every scheme code (columns), and
        ``metrics/external_labels_<method>_<split>.csv``; None for a run whose test set has no
        ``source_label`` column (written before it had one): the plain matrix is drawn then."""
        from cytocompare.reports.external import (
            EXTERNAL_LABEL_COLUMNS, draw_external_confusion, external_table, overall)
        from cytocompare.tolerance import ToleranceMap

        source = run.test_source_labels(run.test_file_prefix(split))
        if source is None:
            return None
        mapped_of, label_of = source
        pooled = pooled_predictions(run, method, split, unmapped=True)
        images, prediction = pooled.images, pooled.prediction
        learnt = run.labels()
        no_call = run.no_call_classes()
        # the scheme's lineage order (maturation stages side by side), as the paper's Fig. 4
        scheme = run_scheme(run)
        columns = [] if scheme is None else list(scheme.lineage_order)
        columns += [c for c in learnt if c not in columns]
        table = external_table(label_of[images], mapped_of[images], prediction, learnt=learnt, no_call=no_call,
                               tolerance=ToleranceMap(run.tolerated_pairs()), order=columns)
        run.write_csv(f"metrics/external_labels_{_safe(method)}_{_safe(split)}.csv", list(EXTERNAL_LABEL_COLUMNS),
                      (r.as_csv_row() for r in table))
        every, known = overall(table), overall(table, learnt_only=True)
        title = (f"{method} — {split}: the test set's own labels against the {len(columns)} class codes\n"
                 f"mapped cells: {every['n_images']:.0f}, called {every['coverage']:.0%}, "
                 f"right of called {every['right_of_called_strict']:.0%} strict / "
                 f"{every['right_of_called_tolerant']:.0%} tolerant; mapped to a learnt class: "
                 f"{known['n_images']:.0f}, called {known['coverage']:.0%}, right {known['right_of_called_strict']:.0%}"
                 f" / {known['right_of_called_tolerant']:.0%}")
        plt = _pyplot()
        fig = draw_external_confusion(plt, table, columns=columns, no_call=no_call, learnt=learnt, title=title)
        path = run.path / "charts" / f"confusion_{_safe(method)}_{_safe(split)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=self.dpi)
        plt.close(fig)
        return path


#: the marker style of a per-class difference: clear (Holm p < alpha) or not
_CLEAR = {"fmt": "o", "color": "tab:blue", "markerfacecolor": "tab:blue", "ecolor": "tab:blue"}
_UNCLEAR = {"fmt": "o", "color": "0.45", "markerfacecolor": "white", "ecolor": "0.55"}


def _no_negative_zero(x: float) -> float:
    from cytocompare.reports.paired import no_negative_zero  # paired imports this module

    return no_negative_zero(float(x))


def _f(value: Any) -> float:
    try:
        return float(value) if value not in ("", None) else math.nan
    except (TypeError, ValueError):
        return math.nan


def paired_per_class_figure(rows: Sequence[Mapping[str, Any]], names: Mapping[str, str], split: str, *,
                            alpha: float, width: float = 14.0) -> Any:
    """Forest plot of per-class recall differences: one panel per method pair (rows of panels)
    and criterion (columns), classes down the y axis in the rows' order with name and n, the
    difference a - b as a dot and its 95 % CI (``ci_low``, ``ci_high``) as a horizontal bar.

    ``rows`` are rows of ``metrics/paired_per_class_<split>.csv`` (keys of
    :data:`cytocompare.stats.PAIRED_PER_CLASS_COLUMNS` plus ``criterion``). Filled blue: Holm p <
    ``alpha`` (the rule the sentences use, :func:`cytocompare.reports.paired.describe_per_class`);
    hollow grey otherwise. Each panel's error-bar containers carry the labels ``Holm p < alpha``,
    ``Holm p ≥ alpha`` and ``no interval`` (a point without a CI).
    """
    plt = _pyplot()
    pairs = list(dict.fromkeys((str(r["method_a"]), str(r["method_b"])) for r in rows))
    criteria = list(dict.fromkeys(str(r.get("criterion", "")) for r in rows))
    by_panel: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        by_panel.setdefault((str(r["method_a"]), str(r["method_b"]), str(r.get("criterion", ""))), []).append(r)
    values = np.array([_f(r[k]) for r in rows for k in ("diff", "ci_low", "ci_high")], dtype=float)
    limit = difference_limit(values)
    n_rows = max((len(v) for v in by_panel.values()), default=1)
    fig, axes = plt.subplots(len(pairs), len(criteria), figsize=(width, len(pairs) * (0.36 * n_rows + 1.3) + 0.8),
                             sharex=True, squeeze=False, constrained_layout=True)
    for i, (a, b) in enumerate(pairs):
        for j, crit in enumerate(criteria):
            ax = axes[i][j]
            sub = by_panel.get((a, b, crit), [])
            codes = [str(r["class"]) for r in sub]
            y = np.arange(len(sub), dtype=float)
            diff = np.array([_f(r["diff"]) for r in sub], dtype=float)
            lo = np.array([_f(r["ci_low"]) for r in sub], dtype=float)
            hi = np.array([_f(r["ci_high"]) for r in sub], dtype=float)
            p_holm = np.array([_f(r["p_holm"]) for r in sub], dtype=float)
            has_ci = np.isfinite(lo) & np.isfinite(hi)
            clear = has_ci & np.isfinite(p_holm) & (p_holm < alpha)
            for sel, style, label in ((clear, _CLEAR, f"Holm p < {alpha:g}"),
                                      (has_ci & ~clear, _UNCLEAR, f"Holm p ≥ {alpha:g}")):
                if sel.any():
                    ax.errorbar(diff[sel], y[sel], xerr=np.vstack([diff[sel] - lo[sel], hi[sel] - diff[sel]]),
                                capsize=3, elinewidth=1.6, markersize=6, label=label, zorder=3, **style)
            if (~has_ci).any():
                ax.errorbar(diff[~has_ci], y[~has_ci], fmt="x", color="0.3", label="no interval", zorder=3)
            for k in range(len(sub)):  # the values in words, at the right edge
                d, low, high = (_no_negative_zero(v) for v in (diff[k], lo[k], hi[k]))
                ci = f"[{low:+.2f}, {high:+.2f}]" if has_ci[k] else "[–]"
                ax.text(1.01, y[k], f"{d:+.2f} {ci}", transform=ax.get_yaxis_transform(), va="center",
                        fontsize=7.5, color="tab:blue" if clear[k] else "0.35")
            style_recall_difference_axis(ax, crit or "strict", len(sub), limit, f"{a} − {b}" + (f", {crit}" if crit else ""))
            ax.set_yticks(y)
            ns = [str(r.get("n", "")) for r in sub]
            ax.set_yticklabels([(f"{c} ({names[c]})" if names.get(c, c) != c else c) + f"  n={n}"
                                for c, n in zip(codes, ns, strict=True)], fontsize=8)
            if j > 0:
                ax.tick_params(labelleft=False)
            ax.set_xlabel(f"recall {a} − recall {b}" + (f" ({crit})" if crit else ""), fontsize=9)
            for x, ha, text in ((0.01, "left", f"← {b} higher"), (0.99, "right", f"{a} higher →")):
                ax.text(x, 0.995, text, transform=ax.transAxes, ha=ha, va="top", fontsize=8, color="0.35")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", color="tab:blue", linewidth=1.6),
               Line2D([], [], marker="o", color="0.55", markerfacecolor="white", linewidth=1.6)]
    fig.legend(handles, [f"Holm-corrected McNemar p < {alpha:g}", f"Holm p ≥ {alpha:g} (not a clear difference)"],
               loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle(f"Per-class recall differences — split {split} (paired, on the same images; bar: 95% paired "
                 "bootstrap CI, stratified by class; right: a − b [CI])", fontsize=11)
    return fig


def draw_paired_per_class(run: RunDir, split: str, *, alpha: float, dpi: int = 120) -> Path | None:
    """``charts/paired_per_class_<split>.png`` from ``metrics/paired_per_class_<split>.csv`` (None
    when that file has no rows): :func:`paired_per_class_figure` with the run's class names."""
    rows = run.read_csv(f"metrics/paired_per_class_{split}.csv")
    if not rows:
        return None
    plt = _pyplot()
    fig = paired_per_class_figure(rows, class_names(run, list(dict.fromkeys(r["class"] for r in rows))), split,
                                  alpha=alpha)
    path = run.path / "charts" / f"paired_per_class_{_safe(split)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
