"""External validation across two class schemes (Matek et al. 2021, Fig. 4).

Another lab labels its cells in its own scheme (PBC: band and segmented neutrophil, myelocyte,
metamyelocyte, platelet, ...). The confusion matrix of an external split therefore has the test
set's **own labels as rows** (``source_label`` of ``test_dataset.csv``: the folder name or file
prefix before ``label_map``) and **every code of the class scheme as columns**, the no-call
classes (ART, NIF) apart on the right. Images whose label has no entry in ``label_map`` (kept with
``test_data.unmapped: predict``) are rows too: what a model answers for a class it never learnt
is worth seeing, and nothing is dropped.

Each row also gets its coverage (share of images with a real call) and, for a mapped row, the
share of its calls that are right, strictly and with the tolerated adjacent classes (a band
neutrophil mapped to NGB and called NGS is tolerated). :func:`external_table` computes these
(``metrics/external_labels_<method>_<split>.csv``), :func:`draw_external_confusion` draws them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cytocompare.datasets import UNMAPPED
from cytocompare.tolerance import ToleranceMap

#: columns of ``metrics/external_labels_<method>_<split>.csv``, one row per external label
EXTERNAL_LABEL_COLUMNS: tuple[str, ...] = (
    "source_label", "mapped_to", "learnt", "n_images", "n_called", "coverage",
    "right_of_called_strict", "right_of_called_tolerant", "most_frequent_call",
)


@dataclass
class ExternalRow:
    """One external label: its mapping, and what the method answered for its images."""

    source_label: str
    mapped_to: str  # a class code, or "" (UNMAPPED)
    learnt: bool  # the mapped code is one the method was trained on
    calls: Counter[str]  # prediction -> images
    n_called: int
    n_right_strict: int
    n_right_tolerant: int

    @property
    def n_images(self) -> int:
        return sum(self.calls.values())

    def as_csv_row(self) -> list[Any]:
        n, k = self.n_images, self.n_called
        mapped = self.mapped_to != UNMAPPED
        return [
            self.source_label, self.mapped_to, self.learnt, n, k, k / n if n else float("nan"),
            self.n_right_strict / k if (k and mapped) else float("nan"),
            self.n_right_tolerant / k if (k and mapped) else float("nan"),
            self.calls.most_common(1)[0][0] if n else "",
        ]


def external_table(
    source_labels: Sequence[str] | np.ndarray,
    mapped: Sequence[str] | np.ndarray,
    prediction: Sequence[str] | np.ndarray,
    *,
    learnt: Sequence[str],
    no_call: Sequence[str],
    tolerance: ToleranceMap,
    order: Sequence[str],
) -> list[ExternalRow]:
    """One :class:`ExternalRow` per external label, in display order.

    ``source_labels``, ``mapped`` (the class code each image's label maps to, or
    :data:`~cytocompare.datasets.UNMAPPED`) and ``prediction`` are parallel, one entry per
    image. Rows are ordered by their mapped code's position in ``order`` (the scheme's), then by
    label; unmapped labels come last. An unmapped image is never right or wrong: its
    ``n_right_*`` stay 0 and its CSV accuracies are empty.
    """
    src = np.asarray(source_labels, dtype=object).astype(str)
    code = np.asarray(mapped, dtype=object).astype(str)
    pred = np.asarray(prediction, dtype=object).astype(str)
    if not len(src) == len(code) == len(pred):
        raise ValueError(f"{len(src)} source labels, {len(code)} mapped codes and {len(pred)} predictions")
    no_call_set, learnt_set = set(no_call), set(learnt)
    pos = {c: i for i, c in enumerate(order)}
    rows = []
    for label in sorted(set(src.tolist())):
        is_label = src == label
        codes = set(code[is_label].tolist())
        if len(codes) != 1:  # one label, one mapping: two would mean two rows' worth of truth
            raise ValueError(f"external label {label!r} maps to several codes: {sorted(codes)}")
        target = codes.pop()
        p = pred[is_label]
        called = ~np.isin(p, list(no_call_set)) if no_call_set else np.ones(len(p), dtype=bool)
        is_mapped = target != UNMAPPED
        strict = int(np.sum(called & (p == target))) if is_mapped else 0
        tolerant = int(np.sum(called & tolerance.correct(np.full(len(p), target), p))) if is_mapped else 0
        rows.append(ExternalRow(label, target, target in learnt_set, Counter(p.tolist()),
                                int(called.sum()), strict, tolerant))
    rows.sort(key=lambda r: (r.mapped_to == UNMAPPED, pos.get(r.mapped_to, len(pos)), r.mapped_to, r.source_label))
    return rows


def overall(rows: Sequence[ExternalRow], *, learnt_only: bool = False) -> dict[str, float]:
    """Coverage and right-of-called (strict, tolerant) pooled over the mapped rows (with
    ``learnt_only``: the rows mapped to a class the method was trained on)."""
    use = [r for r in rows if r.mapped_to != UNMAPPED and (r.learnt or not learnt_only)]
    n = sum(r.n_images for r in use)
    k = sum(r.n_called for r in use)
    nan = float("nan")
    return {
        "n_images": float(n),
        "coverage": k / n if n else nan,
        "right_of_called_strict": sum(r.n_right_strict for r in use) / k if k else nan,
        "right_of_called_tolerant": sum(r.n_right_tolerant for r in use) / k if k else nan,
    }


def _pct(x: float) -> str:
    return "–" if x != x else f"{100 * x:.0f} %"


def draw_external_confusion(
    plt: Any,
    rows: Sequence[ExternalRow],
    *,
    columns: Sequence[str],
    no_call: Sequence[str],
    learnt: Sequence[str],
    title: str,
) -> Any:
    """The two-scheme confusion matrix: external labels down, class codes across (no-call
    columns in a panel of their own on the right), each cell the number of the row's images
    given that answer, shaded by its share of the row; per row its coverage and right-of-called
    (tolerant) at the far right. Codes the method never learnt are greyed on the column axis."""
    main_cols = [c for c in columns if c not in set(no_call)]
    nc_cols = [c for c in no_call if c in set(columns) or any(r.calls.get(c) for r in rows)]
    extra = sorted({c for r in rows for c in r.calls} - set(main_cols) - set(nc_cols))
    main_cols += extra  # a prediction outside the scheme still has a column
    counts_main = np.array([[r.calls.get(c, 0) for c in main_cols] for r in rows], dtype=float)
    counts_nc = np.array([[r.calls.get(c, 0) for c in nc_cols] for r in rows], dtype=float)
    totals = np.maximum(np.array([r.n_images for r in rows], dtype=float), 1)[:, None]
    width = 0.36 * (len(main_cols) + len(nc_cols)) + 6.5
    height = 0.36 * len(rows) + 2.6
    fig = plt.figure(figsize=(width, height), constrained_layout=True)
    grid = fig.add_gridspec(1, 3, width_ratios=[max(len(main_cols), 1), max(len(nc_cols), 1) + 0.3, 3.2])
    ax, ax_nc, ax_txt = fig.add_subplot(grid[0]), fig.add_subplot(grid[1]), fig.add_subplot(grid[2])
    learnt_set = set(learnt)
    for axis, counts, cols, cmap in ((ax, counts_main, main_cols, "Blues"), (ax_nc, counts_nc, nc_cols, "Oranges")):
        frac = counts / totals * 100
        axis.imshow(frac if counts.size else np.zeros((len(rows), 1)), cmap=cmap, vmin=0, vmax=100, aspect="auto")
        for i in range(counts.shape[0]):
            for j in range(counts.shape[1]):
                if counts[i, j]:
                    axis.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7.5,
                              color="white" if frac[i, j] > 55 else "black")
        axis.set_xticks(range(len(cols)))
        axis.set_xticklabels(cols, rotation=90, fontsize=8.5)
        for tick, c in zip(axis.get_xticklabels(), cols, strict=True):
            if c not in learnt_set:
                tick.set_color("0.6")  # a code the method never learnt: it cannot answer it
        axis.set_yticks(range(len(rows)))
        axis.tick_params(axis="x", top=False)
    ax.set_yticklabels([f"{r.source_label} → {r.mapped_to or 'unmapped'}  (n={r.n_images})" for r in rows],
                       fontsize=8.5)
    ax.set_ylabel("external label → class code")
    ax.set_xlabel("predicted class (grey: not learnt)")
    ax_nc.set_yticklabels([])
    ax_nc.set_xlabel("no call")
    for tick, r in zip(ax.get_yticklabels(), rows, strict=True):
        if r.mapped_to == UNMAPPED:  # a class the label map does not cover: shown, never scored
            tick.set_fontstyle("italic")
    ax_txt.set_xlim(0, 1)
    ax_txt.set_ylim(len(rows) - 0.5, -0.5)
    ax_txt.axis("off")
    ax_txt.text(0.02, -0.9, "called   right (tol.)", fontsize=8, fontweight="bold", va="bottom")
    for i, r in enumerate(rows):
        k = r.n_called
        right = r.n_right_tolerant / k if (k and r.mapped_to != UNMAPPED) else float("nan")
        ax_txt.text(0.02, i, f"{_pct(k / max(r.n_images, 1)):>6}   {_pct(right):>6}", fontsize=8, va="center",
                    family="monospace")
    fig.suptitle(title, fontsize=10)
    return fig
