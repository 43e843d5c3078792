"""charts/paired_per_class_<split>.png: the per-class paired recall differences as intervals.

The paired-stats reporter draws it from metrics/paired_per_class_<split>.csv; these tests read the
plotted values back from the matplotlib artists and compare them with that CSV.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cytocompare.reports.charts import difference_limit, draw_paired_per_class, paired_per_class_figure
from cytocompare.reports.paired import ALPHA, PairedStatsReporter
from cytocompare.rundir import RunDir
from test_reports import NAMES, _png_ok, make_synthetic_run


def _panels(fig) -> dict[str, object]:  # noqa: ANN001
    """panel title ("a − b, criterion") -> axes."""
    return {ax.get_title(loc="left"): ax for ax in fig.axes}


def _plotted(ax) -> dict[int, tuple[str, float, float | None, float | None]]:  # noqa: ANN001
    """y position -> (container label, x of the dot, CI low, CI high) of every error-bar container."""
    out = {}
    for cont in ax.containers:
        line, _, bars = cont.lines
        xs, ys = line.get_xdata(), line.get_ydata()
        segs = bars[0].get_segments() if bars else [None] * len(xs)
        for x, y, seg in zip(xs, ys, segs, strict=True):
            lo, hi = (None, None) if seg is None else (float(seg[0][0]), float(seg[1][0]))
            out[int(round(float(y)))] = (cont.get_label(), float(x), lo, hi)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    run = make_synthetic_run(tmp_path_factory.mktemp("paired_chart") / "run")
    PairedStatsReporter(n_boot=200).report(run.path)
    return run


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_reporter_writes_one_chart_per_split(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path / "run", n_folds=2)
    written = PairedStatsReporter(n_boot=50).report(run.path)
    for split in ("cv", "external"):
        path = run.path / "charts" / f"paired_per_class_{split}.png"
        assert path in written
        _png_ok(path, 600)


def test_the_plotted_values_are_the_csvs(run: RunDir) -> None:
    rows = run.read_csv("metrics/paired_per_class_cv.csv")
    assert rows and {r["criterion"] for r in rows} == {"strict", "tolerant"}
    fig = paired_per_class_figure(rows, NAMES, "cv", alpha=ALPHA)
    panels = _panels(fig)
    assert set(panels) == {f"{r['method_a']} − {r['method_b']}, {r['criterion']}" for r in rows}
    for title, ax in panels.items():
        sub = [r for r in rows if f"{r['method_a']} − {r['method_b']}, {r['criterion']}" == title]
        plotted = _plotted(ax)
        assert sorted(plotted) == list(range(len(sub)))  # one dot per class, none dropped
        fmt = ax.yaxis.get_major_formatter()  # the labels also where hidden (the right column's)
        labels = [fmt(y, i) for i, y in enumerate(ax.get_yticks())]
        for y, r in enumerate(sub):  # classes down the axis in the CSV's order, names and n beside codes
            assert labels[y] == f"{r['class']} ({NAMES[r['class']]})  n={r['n']}"
            label, x, lo, hi = plotted[y]
            assert x == pytest.approx(float(r["diff"]), abs=1e-12)
            assert (lo, hi) == pytest.approx((float(r["ci_low"]), float(r["ci_high"])), abs=1e-12)
            clear = float(r["p_holm"]) < ALPHA
            assert label == (f"Holm p < {ALPHA:g}" if clear else f"Holm p ≥ {ALPHA:g}")
        lim = ax.get_xlim()
        values = np.array([float(r[k]) for r in rows for k in ("diff", "ci_low", "ci_high")])
        assert lim[0] <= values.min() and values.max() <= lim[1] and -lim[0] == lim[1]  # nothing cut off
    fig.clf()


def test_clear_unclear_and_missing_intervals_hand_made() -> None:
    base = {"method_a": "deep", "method_b": "classical", "criterion": "strict", "n": 40, "recall_a": 0.9,
            "recall_b": 0.6, "mcnemar_b": 12, "mcnemar_c": 0, "p": 0.0005}
    rows = [
        base | {"class": "BLA", "diff": 0.3, "ci_low": 0.15, "ci_high": 0.45, "p_holm": 0.001},    # clear
        base | {"class": "EOS", "diff": 0.25, "ci_low": 0.05, "ci_high": 0.45, "p_holm": 0.2},     # CI misses 0, Holm not
        base | {"class": "LYT", "diff": -0.1, "ci_low": "nan", "ci_high": "nan", "p_holm": 1.0},   # no interval
    ]
    fig = paired_per_class_figure(rows, {"BLA": "blast"}, "s", alpha=0.05)
    (ax,) = fig.axes
    assert ax.get_title(loc="left") == "deep − classical, strict"
    plotted = _plotted(ax)
    assert plotted[0] == ("Holm p < 0.05", 0.3, 0.15, 0.45)
    assert plotted[1][0] == "Holm p ≥ 0.05"  # the interval alone does not make it "beats"
    assert plotted[2][:2] == ("no interval", -0.1) and plotted[2][2] is None
    assert [t.get_text() for t in ax.get_yticklabels()] == ["BLA (blast)  n=40", "EOS  n=40", "LYT  n=40"]
    texts = [t.get_text() for t in ax.texts]
    assert "+0.30 [+0.15, +0.45]" in texts and "-0.10 [–]" in texts
    assert "← classical higher" in texts and "deep higher →" in texts
    assert ax.get_xlim() == pytest.approx((-0.5, 0.5))  # 0.45 rounded up with a margin
    fig.clf()


def test_difference_limit_hand_worked() -> None:
    assert difference_limit(np.array([0.33, -0.1])) == pytest.approx(0.4)
    assert difference_limit(np.array([0.05, math.nan])) == pytest.approx(0.2)  # never narrower than ±0.2
    assert difference_limit(np.array([-1.0, 0.2])) == pytest.approx(1.05)  # a full ±1 still fits
    assert difference_limit(np.array([math.nan])) == pytest.approx(0.2)


def test_no_rows_no_chart(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.write_csv("metrics/paired_per_class_s.csv", ["criterion", "method_a", "method_b", "class"], [])
    assert draw_paired_per_class(run, "s", alpha=ALPHA) is None
    assert not (tmp_path / "charts").exists()


def test_a_bound_of_minus_epsilon_is_printed_as_zero() -> None:
    from cytocompare.reports.paired import describe_per_class

    row = {"method_a": "deep", "method_b": "classical", "criterion": "strict", "class": "BLA", "n": 60,
           "recall_a": 0.9, "recall_b": 0.77, "diff": 0.13, "ci_low": -1e-17, "ci_high": 0.27, "p_holm": 0.6}
    assert "by 0.13 [0.00, 0.27]" in describe_per_class(row)
    fig = paired_per_class_figure([row], {}, "s", alpha=ALPHA)
    assert "+0.13 [+0.00, +0.27]" in [t.get_text() for t in fig.axes[0].texts]
    fig.clf()
