"""The two-scheme external table (Fig. 4) against references: scikit-learn's confusion matrix for
its counts, the ExternalEvaluator for coverage and right-of-called on the mapped cells."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion

from cytocompare.datasets import UNMAPPED
from cytocompare.metrics import ExternalEvaluator
from cytocompare.protocols import EvaluationContext
from cytocompare.reports.charts import _pyplot
from cytocompare.reports.external import draw_external_confusion, external_table, overall
from cytocompare.tolerance import ToleranceMap

#: PBC's own labels and the many-to-one map onto the Matek codes (band neutrophil -> NGB)
MAP = {"SNE": "NGS", "BNE": "NGB", "MY": "MYB", "MMY": "MMZ", "LY": "LYT", "PLATELET": UNMAPPED}
LEARNT = ["LYT", "NGS", "MYB"]
CODES = ["BLA", "MYB", "MMZ", "NGB", "NGS", "LYT", "NIF", "ART"]
NO_CALL = ["ART", "NIF"]
TOL = ToleranceMap([("MMZ", "NGB"), ("NGB", "NGS"), ("MYB", "MMZ")])


@pytest.fixture
def cells() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    src = rng.choice(list(MAP), size=300)
    pred = rng.choice(LEARNT + NO_CALL, size=300)
    return src, np.array([MAP[s] for s in src]), pred


def test_counts_match_sklearns_confusion_matrix(cells) -> None:
    src, mapped, pred = cells
    rows = external_table(src, mapped, pred, learnt=LEARNT, no_call=NO_CALL, tolerance=TOL, order=CODES)
    labels = [r.source_label for r in rows]
    cols = LEARNT + NO_CALL
    reference = sk_confusion(src, pred, labels=labels + [c for c in cols if c not in labels])[: len(labels)]
    every = labels + [c for c in cols if c not in labels]
    ours = np.array([[r.calls.get(c, 0) for c in every] for r in rows])
    assert (ours == reference).all()
    # scheme order of the mapped code, band (NGB) before segmented (NGS), the unmapped row last
    assert labels == ["MY", "MMY", "BNE", "SNE", "LY", "PLATELET"]
    assert [r.learnt for r in rows] == [True, False, False, True, True, False]


def test_per_row_and_pooled_figures_match_the_external_evaluator(cells) -> None:
    src, mapped, pred = cells
    rows = external_table(src, mapped, pred, learnt=LEARNT, no_call=NO_CALL, tolerance=TOL, order=CODES)
    keep = mapped != UNMAPPED
    ctx = EvaluationContext(labels=tuple(LEARNT), tolerated_pairs=frozenset(frozenset(p) for p in TOL.pairs),
                            no_call_classes=frozenset(NO_CALL))
    reference = {(m.metric, m.cls): m.value for m in ExternalEvaluator().evaluate(mapped[keep], pred[keep], ctx)}
    pooled = overall(rows)
    assert pooled["coverage"] == pytest.approx(reference["coverage", ""])
    assert pooled["right_of_called_strict"] == pytest.approx(reference["accuracy_called_strict", ""])
    assert pooled["right_of_called_tolerant"] == pytest.approx(reference["accuracy_called_tolerant", ""])
    by_label = {r.source_label: r.as_csv_row() for r in rows}
    for label, code in MAP.items():
        if code == UNMAPPED:
            continue
        row = dict(zip(("coverage", "strict", "tolerant"), by_label[label][5:8], strict=True))
        assert row["coverage"] == pytest.approx(1 - reference["no_call_rate", code])
        assert row["strict"] == pytest.approx(reference["recall_called", code], nan_ok=True)
        assert row["tolerant"] == pytest.approx(reference["recall_called_tolerant", code], nan_ok=True)
    # the unmapped row has a coverage but no accuracy: nothing it answers is right or wrong
    platelet = by_label["PLATELET"]
    assert 0 < platelet[5] < 1 and np.isnan(platelet[6]) and np.isnan(platelet[7])
    # many-to-one: a band neutrophil called NGS is tolerated, never strictly right
    bne = next(r for r in rows if r.source_label == "BNE")
    assert bne.n_right_strict == 0 and bne.n_right_tolerant == bne.calls["NGS"]
    learnt_only = overall(rows, learnt_only=True)
    assert learnt_only["n_images"] == np.isin(src, ["SNE", "MY", "LY"]).sum()


def test_one_label_with_two_codes_is_refused() -> None:
    with pytest.raises(ValueError, match="'SNE' maps to several codes"):
        external_table(["SNE", "SNE"], ["NGS", "NGB"], ["NGS", "NGS"], learnt=LEARNT, no_call=NO_CALL,
                       tolerance=TOL, order=CODES)


def test_the_figure_has_a_row_per_label_and_the_no_call_columns_apart(cells) -> None:
    src, mapped, pred = cells
    rows = external_table(src, mapped, pred, learnt=LEARNT, no_call=NO_CALL, tolerance=TOL, order=CODES)
    plt = _pyplot()
    fig = draw_external_confusion(plt, rows, columns=CODES, no_call=NO_CALL, learnt=LEARNT, title="t")
    main, side, _ = fig.axes
    assert [t.get_text() for t in main.get_xticklabels()] == ["BLA", "MYB", "MMZ", "NGB", "NGS", "LYT"]
    assert [t.get_text() for t in side.get_xticklabels()] == NO_CALL
    assert [t.get_text().split(" ")[0] for t in main.get_yticklabels()] == [r.source_label for r in rows]
    grey = {t.get_text() for t in main.get_xticklabels() if t.get_color() != "black"}
    assert grey == {"BLA", "MMZ", "NGB"}  # codes the method never learnt
    plt.close(fig)
