"""Evaluation of a run directory: which evaluators and reporters run, and how.

One path serves ``cytocompare run`` (after the last fold) and ``cytocompare report`` (on a
finished or partial run): :func:`evaluate_and_report`. It reads the predictions through
:class:`~cytocompare.rundir.RunDir`, applies the evaluators (:func:`evaluate_run`), then runs the
reporters. The maths lives in :mod:`cytocompare.metrics` and :mod:`cytocompare.stats`, which
know no registry and no files.

Two rules are declared by the components themselves, never by their registered names:

* an evaluator with a class attribute ``split_kinds`` (a set of split kinds) runs only on splits
  of those kinds (the ``external`` evaluator: ``split_kinds = frozenset({"external"})``); without
  it, an evaluator runs on every split;
* a reporter with the class attribute ``runs_last = True`` runs after the others, whatever the
  order the protocol lists them in (the ``html`` reporter links what the others wrote).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cytocompare.protocols import EvaluationContext
from cytocompare.rundir import RunDir
from cytocompare.stats import MethodPredictions, compare_methods, compare_methods_per_class
from cytocompare.tolerance import ToleranceMap

if TYPE_CHECKING:  # pragma: no cover
    from cytocompare.protocols import Evaluator, Reporter
    from cytocompare.registry import Registry

#: evaluators a protocol runs unless it names its own
DEFAULT_EVALUATORS: tuple[str, ...] = ("precision-recall", "summary", "external")
#: reporters a protocol runs unless it names its own (html last: it links what the others wrote)
DEFAULT_REPORTERS: tuple[str, ...] = ("table1", "recall-chart", "confusion-chart", "paired-stats", "html")


# ---------------------------------------------------------------------------- declared rules
def evaluates_split(evaluator: Any, kind: str) -> bool:
    """Whether ``evaluator`` runs on a split of kind ``kind`` (its class's ``split_kinds``; all if unset)."""
    kinds = getattr(type(evaluator), "split_kinds", None)
    return kinds is None or kind in kinds


def runs_last(reporter: Any) -> bool:
    """Whether ``reporter`` runs after the others (its class's ``runs_last``)."""
    return bool(getattr(type(reporter), "runs_last", False))


# ---------------------------------------------------------------------------- reading a run
def run_scheme(run: RunDir) -> Any:
    """The run's class scheme (run.json ``class_scheme``, else matek2021, as
    :func:`cytocompare.reports._inferred_from`); None when it cannot be loaded."""
    from cytocompare.classes import load_scheme
    from cytocompare.errors import ProtocolError

    try:
        return load_scheme(run.info.get("class_scheme", "matek2021"))
    except (ProtocolError, OSError, ValueError):  # a scheme file that moved since the run
        return None


def _scheme_codes(run: RunDir) -> list[str]:
    """The codes of the run's class scheme in scheme order; [] when it cannot be loaded."""
    scheme = run_scheme(run)
    return [] if scheme is None else list(scheme.codes)


def display_order(run: RunDir, classes: set[str] | Sequence[str]) -> list[str]:
    """``classes`` in display order: run.json ``labels`` order first, then the class scheme's
    order, then any other codes sorted (a class dropped from one split is missing from run.json
    ``labels`` but is still tested by the others)."""
    wanted = set(classes)
    order = [c for c in run.labels() if c in wanted]
    rest = wanted - set(order)
    if rest:
        order += [c for c in _scheme_codes(run) if c in rest]
        order += sorted(rest - set(order))
    return order


def split_labels(run: RunDir, split: str) -> list[str]:
    """The classes a split tested, in :func:`display_order`: every truth value of its completed
    folds (all methods).

    Per-class rows and the class averages of a split (macro-F1, weighted F1; balanced accuracy
    already averages over the classes present) describe exactly these classes: a class that
    ``small_classes: drop`` left out of another split keeps its rows here, and a class that
    ``train_only`` kept on the training side only, or that an external test set lacks, gets none.
    """
    return _split_labels(run, split, _read_split(run, split))


def _read_split(run: RunDir, split: str) -> dict[tuple[str, int], Any]:
    return {(m, k): run.read_predictions(m, s, k) for m, s, k in run.completed() if s == split}


def _split_labels(run: RunDir, split: str, preds: Mapping[tuple[str, int], Any]) -> list[str]:
    seen: set[str] = set()
    for p in preds.values():
        seen.update(p.truth.tolist())
    return display_order(run, seen)


def context_from_run(run: RunDir, split: str | None = None) -> EvaluationContext:
    """The :class:`EvaluationContext` described by run.json; with ``split``, its ``labels`` are
    the classes that split tested (:func:`split_labels`), else run.json ``labels``."""
    return _context(run, tuple(run.labels()) if split is None else tuple(split_labels(run, split)))


def _context(run: RunDir, labels: tuple[str, ...]) -> EvaluationContext:
    return EvaluationContext(
        labels=labels,
        tolerated_pairs=frozenset(frozenset(p) for p in run.tolerated_pairs()),
        no_call_classes=frozenset(run.no_call_classes()),
    )


def pooled_predictions(run: RunDir, method: str, split: str, *, unmapped: bool = False) -> MethodPredictions:
    """Predictions of one method on one split, every completed fold in fold order.

    In k-fold every image is tested exactly once, so this is one prediction per image; the fold
    of each row is kept for fold-wise statistics. ``unmapped``: with the external images kept
    without a class (:meth:`cytocompare.rundir.RunDir.read_predictions`).
    """
    parts = [(k, run.read_predictions(m, s, k, unmapped=unmapped)) for m, s, k in run.completed()
             if m == method and s == split]
    if not parts:
        empty = np.array([], dtype=str)
        return MethodPredictions(np.array([], dtype=np.int64), np.array([], dtype=np.int64), empty, empty)
    return MethodPredictions(
        images=np.concatenate([p.images for _, p in parts]).astype(np.int64),
        folds=np.concatenate([np.full(len(p), k, dtype=np.int64) for k, p in parts]),
        truth=np.array([t for _, p in parts for t in p.truth.tolist()], dtype=str),
        prediction=np.array([y for _, p in parts for y in p.prediction.tolist()], dtype=str),
    )


def _registry(registry: Registry | None) -> Registry:
    if registry is not None:
        return registry
    from cytocompare.plugins import get_registry

    return get_registry()


#: run.json key and default of each kind of name list
_RECORDED = {"evaluator": ("evaluators", DEFAULT_EVALUATORS), "reporter": ("reporters", DEFAULT_REPORTERS)}


def recorded_names(run: RunDir, kind: str, names: Sequence[str] | None) -> list[str]:
    """``names`` if given, else the ``kind``'s names recorded in run.json, else its defaults.

    ``kind`` is ``"evaluator"`` (run.json ``evaluators``, :data:`DEFAULT_EVALUATORS`) or
    ``"reporter"`` (``reporters``, :data:`DEFAULT_REPORTERS`).
    """
    if names is not None:
        return list(names)
    key, defaults = _RECORDED[kind]
    return list(run.info.get(key) or defaults)


def default_evaluators(run: RunDir, registry: Registry | None = None) -> dict[str, Evaluator]:
    """Build the evaluators named in run.json (``evaluators``; else the defaults) from the registry."""
    reg = _registry(registry)
    return {name: reg.create("evaluator", name) for name in recorded_names(run, "evaluator", None)}


# ---------------------------------------------------------------------------- metrics files
def _summarise(values: list[float]) -> tuple[float, float, int]:
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    n = len(arr)
    mean = float(arr.mean()) if n else float("nan")
    sd = float(arr.std(ddof=1)) if n > 1 else float("nan")
    return mean, sd, n


def evaluate_run(run: RunDir, evaluators: Mapping[str, Evaluator] | None = None,
                 registry: Registry | None = None) -> list[Path]:
    """Evaluate every completed fold of a run and write ``metrics/long.csv``, ``summary.csv``, ``metrics.json``.

    Parameters
    ----------
    run
        The run directory.
    evaluators
        Name -> evaluator; by default those listed in run.json (built from the registry).
        An evaluator whose class declares ``split_kinds`` runs only on splits of those kinds.
    registry
        Where evaluators named in run.json come from (default: the installed plugins).

    Returns
    -------
    list of Path
        The three files written.

    Notes
    -----
    Each split is evaluated on the classes it tested (:func:`split_labels`), so its per-class
    rows and its class averages describe exactly those; ``metrics.json`` records them under
    ``labels_by_split`` (``labels``: every class of any split, in display order).
    ``summary.csv`` holds mean and sample standard deviation (``ddof=1``) over folds; the sd
    cell is empty with a single fold. Non-finite values (e.g. a class never called) are left
    out of mean and sd and ``n_folds`` counts the folds that had a value.
    """
    if evaluators is None:
        evaluators = default_evaluators(run, registry)
    splits = run.splits()
    method_order = {m: i for i, m in enumerate(run.methods())}
    split_order = {s: i for i, s in enumerate(splits)}
    done = sorted(run.completed(), key=lambda x: (method_order.get(x[0], 1 << 30), split_order.get(x[1], 1 << 30), x))
    # every split is evaluated on the classes it tested, not on the run's list (issue 8.1)
    preds_of: dict[str, dict[tuple[str, int], Any]] = {}
    for method, split, fold in done:
        preds_of.setdefault(split, {})[(method, fold)] = run.read_predictions(method, split, fold)
    labels_of = {split: _split_labels(run, split, preds) for split, preds in preds_of.items()}
    contexts = {split: _context(run, tuple(labels)) for split, labels in labels_of.items()}
    long_rows: list[tuple[str, str, int, str, str, float]] = []
    for method, split, fold in done:
        kind = splits.get(split, {}).get("kind", "holdout")
        preds = preds_of[split][(method, fold)]
        for ev in evaluators.values():
            if not evaluates_split(ev, kind):
                continue
            for r in ev.evaluate(preds.truth, preds.prediction, contexts[split]):
                long_rows.append((method, split, fold, r.metric, r.cls, float(r.value)))
    written = [run.write_csv("metrics/long.csv", ["method", "split", "fold", "metric", "class", "value"], long_rows)]

    grouped: dict[tuple[str, str, str, str], list[float]] = {}
    for method, split, _fold, metric, cls, value in long_rows:
        grouped.setdefault((method, split, metric, cls), []).append(value)
    summary_rows = []
    nested: dict = {}
    for (method, split, metric, cls), values in grouped.items():
        mean, sd, n = _summarise(values)
        summary_rows.append((method, split, metric, cls, mean, sd, n))
        node = nested.setdefault(method, {}).setdefault(split, {"folds": {}, "summary": {}})
        node["summary"].setdefault(metric, {})[cls] = {"mean": mean, "sd": sd, "n_folds": n}
    for method, split, fold, metric, cls, value in long_rows:
        nested[method][split]["folds"].setdefault(str(fold), {}).setdefault(metric, {})[cls] = value
    written.append(run.write_csv("metrics/summary.csv", ["method", "split", "metric", "class", "mean", "sd", "n_folds"],
                                 summary_rows))
    ordered_splits = sorted(labels_of, key=lambda s: (split_order.get(s, 1 << 30), s))
    written.append(run.write_json("metrics/metrics.json", {
        "labels": display_order(run, set(run.labels()).union(*labels_of.values())),
        "labels_by_split": {s: labels_of[s] for s in ordered_splits}, "methods": nested}))
    return written


def paired_comparisons(
    run: RunDir, split: str, *, n_boot: int = 2000, seed: int = 0, tolerant: bool = False
) -> list[dict]:
    """Compare every pair of methods with predictions on the same images of ``split``.

    Predictions are pooled over folds (:func:`pooled_predictions`) and handed to
    :func:`cytocompare.stats.compare_methods` (methods in run order, the run's tolerated pairs
    when ``tolerant``). Returns one dict per pair with the keys of
    :data:`cytocompare.stats.PAIRED_COLUMNS`.
    """
    tol = ToleranceMap(run.tolerated_pairs()) if tolerant else None
    pooled = {m: pooled_predictions(run, m, split) for m in run.methods()}
    try:
        return compare_methods(pooled, n_boot=n_boot, seed=seed, tolerance=tol)
    except ValueError as exc:
        raise ValueError(f"split {split!r}: {exc}") from None


def paired_per_class(
    run: RunDir, split: str, *, n_boot: int = 2000, seed: int = 0, tolerant: bool = False
) -> list[dict]:
    """Per-class recall differences of every pair of methods on the images of ``split`` both were
    tested on (:func:`cytocompare.stats.compare_methods_per_class` on :func:`pooled_predictions`;
    methods in run order, classes in :func:`display_order`, the run's tolerated pairs when
    ``tolerant``). One dict per pair and class with the keys of
    :data:`cytocompare.stats.PAIRED_PER_CLASS_COLUMNS`; what the paired-stats reporter writes to
    ``metrics/paired_per_class_<split>.csv`` and what a chart or page can draw from directly.
    """
    tol = ToleranceMap(run.tolerated_pairs()) if tolerant else None
    pooled = {m: pooled_predictions(run, m, split) for m in run.methods()}
    seen = {t for p in pooled.values() for t in p.truth.tolist()}
    try:
        return compare_methods_per_class(pooled, classes=display_order(run, seen), n_boot=n_boot, seed=seed,
                                         tolerance=tol)
    except ValueError as exc:
        raise ValueError(f"split {split!r}: {exc}") from None


# ---------------------------------------------------------------------------- the one path
def evaluate_and_report(
    run: RunDir | str | Path,
    evaluators: Sequence[str] | None = None,
    reporters: Sequence[str | Reporter] | None = None,
    registry: Registry | None = None,
    log: Callable[[str], Any] | None = None,
) -> list[Path]:
    """Recompute the metrics of a run and run its reporters (``cytocompare run`` and ``report``).

    Parameters
    ----------
    run
        The run directory.
    evaluators
        Evaluator names; ``None`` = those run.json records, else :data:`DEFAULT_EVALUATORS`.
    reporters
        Reporter names or reporter objects; ``None`` = those run.json records, else
        :data:`DEFAULT_REPORTERS`. Reporters whose class declares ``runs_last`` run after the
        others (stable order otherwise).
    registry
        Where names are looked up (default: the installed plugins).
    log
        Called with one line per reporter: ``[report] <name>: <files written>``.

    Returns
    -------
    list of Path
        Every file the reporters wrote (the metrics files are not listed).
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    evaluate_run(run, {name: _registry(registry).create("evaluator", name)
                       for name in recorded_names(run, "evaluator", evaluators)})
    items = [(item, _registry(registry).create("reporter", item)) if isinstance(item, str)
             else (type(item).__name__, item)
             for item in recorded_names(run, "reporter", reporters)]  # type: ignore[arg-type]
    items.sort(key=lambda named: runs_last(named[1]))  # stable: the given order otherwise
    written: list[Path] = []
    for name, reporter in items:
        files = list(reporter.report(run.path))
        written += files
        if log is not None:
            log(f"[report] {name}: {', '.join(_relative(p, run.path) for p in files) or 'nothing'}")
    return written


def _relative(path: Path | str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


__all__ = [
    "DEFAULT_EVALUATORS",
    "DEFAULT_REPORTERS",
    "context_from_run",
    "default_evaluators",
    "display_order",
    "evaluate_and_report",
    "evaluate_run",
    "evaluates_split",
    "paired_comparisons",
    "paired_per_class",
    "pooled_predictions",
    "recorded_names",
    "runs_last",
    "split_labels",
]
