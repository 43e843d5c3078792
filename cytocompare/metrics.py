"""Strict and tolerant classification metrics (pure numpy) and the built-in evaluators.

Pure maths: no registry, no files. Applying evaluators to a run directory is
:mod:`cytocompare.evaluation`'s job.

Definitions (docs/metrics.md):

* strict recall of class c: images of c predicted as c / images of c;
* strict precision of c: images predicted as c whose truth is c / images predicted as c;
* tolerant recall of c: images of c predicted as c *or as a partner of c* / images of c;
* tolerant precision of c: images predicted as c whose truth is c *or a partner of c* /
  images predicted as c;
* F1 = harmonic mean of precision and recall (0 when both are 0).

A 0 denominator gives ``zero_division`` (0.0 by default, like scikit-learn; NaN on request).
The strict numbers equal scikit-learn's (tests/test_metrics.py checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np

from cytocompare.base import BaseComponent
from cytocompare.protocols import EvaluationContext, MetricRow
from cytocompare.tolerance import ToleranceMap

ArrayLike = Sequence[str] | np.ndarray


def _as_str_array(a: ArrayLike) -> np.ndarray:
    return np.asarray(a, dtype=object).astype(str)


def _check(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_str_array(y_true), _as_str_array(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-d of equal length, got {t.shape} and {p.shape}")
    return t, p


def _divide(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(num.shape, float(zero_division))
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    s = precision + recall
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(s > 0, 2 * precision * recall / np.where(s > 0, s, 1.0), 0.0)
    # NaN precision or recall (zero_division=nan) propagates
    return np.where(np.isnan(s), np.nan, f1)


def _tolerance(tolerance: ToleranceMap | Sequence[Sequence[str]] | None) -> ToleranceMap | None:
    if tolerance is None or isinstance(tolerance, ToleranceMap):
        return tolerance
    return ToleranceMap(tolerance)


def _context_tolerance(context: EvaluationContext) -> ToleranceMap:
    return ToleranceMap(tuple(sorted(p)) for p in context.tolerated_pairs)


def per_class_precision_recall(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    labels: Sequence[str],
    tolerance: ToleranceMap | Sequence[Sequence[str]] | None = None,
    zero_division: float = 0.0,
) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support, strict or tolerant.

    Parameters
    ----------
    y_true, y_pred
        True and predicted class codes. Labels outside ``labels`` count only as errors of
        the listed classes (as in scikit-learn with ``labels=``).
    labels
        Classes to report, in output order; a class may be absent from both arrays.
    tolerance
        ``None`` for strict metrics; a :class:`ToleranceMap` (or pairs) for tolerant ones.
    zero_division
        Value for a 0 denominator (a class never predicted / never present): 0.0 or ``np.nan``.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (float arrays) and ``support`` (int array: images of
        each class in ``y_true``), aligned with ``labels``.
    """
    t, p = _check(y_true, y_pred)
    tol = _tolerance(tolerance)
    labels = list(labels)
    k = len(labels)
    support = np.array([np.sum(t == c) for c in labels], dtype=np.int64)
    n_pred = np.array([np.sum(p == c) for c in labels], dtype=np.int64)
    hit_recall = np.zeros(k, dtype=np.int64)  # images of c called c (or a partner)
    hit_precision = np.zeros(k, dtype=np.int64)  # images called c that are c (or a partner)
    for i, c in enumerate(labels):
        ok = {c} | (set(tol.partners(c)) if tol is not None else set())
        ok_arr = np.array(sorted(ok), dtype=object).astype(str)
        is_c_true = t == c
        is_c_pred = p == c
        hit_recall[i] = np.sum(is_c_true & np.isin(p, ok_arr))
        hit_precision[i] = np.sum(is_c_pred & np.isin(t, ok_arr))
    precision = _divide(hit_precision, n_pred, zero_division)
    recall = _divide(hit_recall, support, zero_division)
    return {"precision": precision, "recall": recall, "f1": _f1(precision, recall), "support": support}


def confusion_matrix(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    labels: Sequence[str],
    normalize: Literal["true"] | None = None,
    pred_labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class.

    Parameters
    ----------
    labels
        Row classes (and column classes unless ``pred_labels`` is given). Images whose truth
        or prediction is not listed are left out, as in scikit-learn.
    normalize
        ``"true"``: divide each row by its sum (rows without images stay all zeros, not NaN).
    pred_labels
        Column classes when they differ from the rows (external validation: predictions may
        include classes such as the no-call classes that the test set lacks).
    """
    t, p = _check(y_true, y_pred)
    rows = list(labels)
    cols = list(pred_labels) if pred_labels is not None else rows
    ri = {c: i for i, c in enumerate(rows)}
    ci = {c: i for i, c in enumerate(cols)}
    cm = np.zeros((len(rows), len(cols)), dtype=np.int64)
    for a, b in zip(t.tolist(), p.tolist(), strict=True):
        i, j = ri.get(a), ci.get(b)
        if i is not None and j is not None:
            cm[i, j] += 1
    if normalize is None:
        return cm
    if normalize != "true":
        raise ValueError(f"normalize must be None or 'true', got {normalize!r}")
    sums = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, sums, out=np.zeros(cm.shape, dtype=float), where=sums > 0)


def accuracy(y_true: ArrayLike, y_pred: ArrayLike, tolerance: ToleranceMap | None = None) -> float:
    """Fraction of correct predictions (tolerant-correct with a tolerance map); NaN if empty."""
    t, p = _check(y_true, y_pred)
    if len(t) == 0:
        return float("nan")
    correct = tolerance.correct(t, p) if tolerance is not None else t == p
    return float(np.mean(correct))


def balanced_accuracy(y_true: ArrayLike, y_pred: ArrayLike, tolerance: ToleranceMap | None = None) -> float:
    """Mean (strict or tolerant) recall over the classes present in ``y_true``.

    Matches :func:`sklearn.metrics.balanced_accuracy_score` for the strict case: classes that
    are only predicted do not count. NaN for empty input.
    """
    t, p = _check(y_true, y_pred)
    present = list(np.unique(t))
    if not present:
        return float("nan")
    rec = per_class_precision_recall(t, p, present, tolerance=tolerance)["recall"]
    return float(np.mean(rec))


def summary_metrics(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    labels: Sequence[str],
    tolerance: ToleranceMap | Sequence[Sequence[str]] | None = None,
) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1 and support-weighted F1 over ``labels``.

    Strict with ``tolerance=None``; tolerant otherwise (F1 from tolerant precision and recall).
    Macro/weighted F1 match ``sklearn.metrics.f1_score(labels=labels, zero_division=0)``.
    """
    tol = _tolerance(tolerance)
    pr = per_class_precision_recall(y_true, y_pred, labels, tolerance=tol, zero_division=0.0)
    f1, support = pr["f1"], pr["support"]
    total = support.sum()
    return {
        "accuracy": accuracy(y_true, y_pred, tol),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, tol),
        "macro_f1": float(np.mean(f1)) if len(f1) else float("nan"),
        "weighted_f1": float(np.sum(f1 * support) / total) if total > 0 else 0.0,
    }


# ---------------------------------------------------------------------------- evaluators
class PrecisionRecallEvaluator(BaseComponent):
    """Per-class precision, recall and F1 (strict and tolerant) plus support.

    Rows: ``precision_strict``, ``recall_strict``, ``f1_strict``, ``precision_tolerant``,
    ``recall_tolerant``, ``f1_tolerant``, ``support``; ``cls`` = class code, one row per class
    of ``context.labels``.
    """

    def __init__(self, zero_division: float = 0.0) -> None:
        self.zero_division = zero_division

    def evaluate(self, y_true: np.ndarray, y_pred: np.ndarray, context: EvaluationContext) -> list[MetricRow]:
        labels = list(context.labels)
        strict = per_class_precision_recall(y_true, y_pred, labels, None, self.zero_division)
        tol = per_class_precision_recall(y_true, y_pred, labels, _context_tolerance(context), self.zero_division)
        rows: list[MetricRow] = []
        for i, c in enumerate(labels):
            for name, res in (("strict", strict), ("tolerant", tol)):
                for m in ("precision", "recall", "f1"):
                    rows.append(MetricRow(f"{m}_{name}", c, float(res[m][i])))
            rows.append(MetricRow("support", c, float(strict["support"][i])))
        return rows


class SummaryEvaluator(BaseComponent):
    """Accuracy, balanced accuracy, macro-F1, weighted F1, each ``_strict`` and ``_tolerant``."""

    def __init__(self) -> None:
        pass

    def evaluate(self, y_true: np.ndarray, y_pred: np.ndarray, context: EvaluationContext) -> list[MetricRow]:
        rows: list[MetricRow] = []
        for name, tol in (("strict", None), ("tolerant", _context_tolerance(context))):
            for metric, value in summary_metrics(y_true, y_pred, context.labels, tol).items():
                rows.append(MetricRow(f"{metric}_{name}", "", value))
        return rows


class ExternalEvaluator(BaseComponent):
    """External validation where some predictions (``context.no_call_classes``) mean "no call".

    Rows (``cls=""``): ``coverage`` (fraction of images with a call), ``accuracy_called_strict``
    and ``accuracy_called_tolerant`` (among called images). Per true class (``cls`` = code):
    ``recall_called`` and ``recall_called_tolerant`` (correct among that class's called
    images), ``no_call_rate`` and ``n_images``. True classes are the training labels present in
    the test set, then any extra test-set classes (which can never be called correctly).
    """

    #: only an external test set has predictions that mean "no call" (cytocompare.evaluation reads this)
    split_kinds: ClassVar[frozenset[str]] = frozenset({"external"})

    def __init__(self) -> None:
        pass

    def evaluate(self, y_true: np.ndarray, y_pred: np.ndarray, context: EvaluationContext) -> list[MetricRow]:
        t, p = _check(y_true, y_pred)
        tol = _context_tolerance(context)
        no_call = np.array(sorted(context.no_call_classes), dtype=object).astype(str)
        called = ~np.isin(p, no_call) if len(no_call) else np.ones(len(p), dtype=bool)
        strict_ok = t == p
        tol_ok = tol.correct(t, p)
        nan = float("nan")
        n_called = int(called.sum())
        rows = [
            MetricRow("coverage", "", float(called.mean()) if len(p) else nan),
            MetricRow("accuracy_called_strict", "", float(strict_ok[called].mean()) if n_called else nan),
            MetricRow("accuracy_called_tolerant", "", float(tol_ok[called].mean()) if n_called else nan),
        ]
        present = set(t.tolist())
        classes = [c for c in context.labels if c in present] + sorted(present - set(context.labels))
        for c in classes:
            is_c = t == c
            c_called = is_c & called
            k = int(c_called.sum())
            rows.append(MetricRow("n_images", c, float(is_c.sum())))
            rows.append(MetricRow("no_call_rate", c, float(1 - k / is_c.sum())))
            rows.append(MetricRow("recall_called", c, float(strict_ok[c_called].mean()) if k else nan))
            rows.append(MetricRow("recall_called_tolerant", c, float(tol_ok[c_called].mean()) if k else nan))
        return rows
