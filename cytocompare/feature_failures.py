"""Cells a feature extractor could not describe (issue 8.3): found, recorded, and dealt with as the
protocol says.

A feature extractor may fail on a cell and still return a row: the ``handcrafted`` extractor
writes a row of fill values with ``qc.segmentation_ok = 0`` when it finds no nucleus (a blank
white or black image). Without this module such rows go into training and testing like any
other. Now:

* an extractor that can tell which rows failed declares :class:`ReportsFeatureFailures`
  (``failure_reasons(F, images)``); the rows that failed must be recognisable from the feature
  matrix itself, because features come from a content-keyed cache and the extractor may never
  have seen the images in this process;
* :func:`apply_feature_failures` applies a method's ``on_feature_failure`` policy
  (:class:`cytocompare.config.MethodSpec`): ``keep`` (train and test on them, as before, but
  listed), ``skip`` (the method neither trains nor is tested on them) or ``stop`` (a
  :class:`FeatureFailureError` naming the files);
* :func:`record_feature_failures` keeps ``feature_failures.csv`` of the run directory (one row
  per failed cell and method: ``image, path, label, method, set, cause, action``) and
  :func:`read_feature_failures` reads it back for the reports.

Pure of the registry; files only through :class:`~cytocompare.rundir.RunDir`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cytocompare.errors import DataError, PluginError
from cytocompare.protocols import ReportsFeatureFailures  # noqa: F401  (re-exported: the protocol lives in protocols.py)

if TYPE_CHECKING:  # pragma: no cover
    from cytocompare.rundir import RunDir
    from cytocompare.splits import Fold

#: the run directory's file of failed cells (written through RunDir)
FEATURE_FAILURES_FILE = "feature_failures.csv"
#: its columns
FEATURE_FAILURE_COLUMNS = ["image", "path", "label", "method", "set", "cause", "action"]
#: ``on_feature_failure`` values, and what each does to a failed cell (the ``action`` column)
POLICIES: tuple[str, ...] = ("keep", "skip", "stop")
ACTIONS = {"keep": "kept", "skip": "skipped", "stop": "stopped the run"}
#: how many failed files a stop message names before it refers to the CSV
MAX_NAMED = 20

Policy = Literal["keep", "skip", "stop"]


@dataclass(frozen=True)
class FeatureFailure:
    """One cell whose features failed."""

    image: int  # index into the image set (the training set, or the external test set)
    path: str
    label: str
    cause: str


@dataclass(frozen=True)
class FeatureFailures:
    """The failed cells of one method on one image set, and what the policy does with them."""

    method: str
    policy: Policy
    set: str  # "train" (the development set) or "test" (the external test set)
    n_images: int
    failures: tuple[FeatureFailure, ...] = ()

    def __len__(self) -> int:
        return len(self.failures)

    @property
    def excluded(self) -> np.ndarray:
        """Image indices the method must neither train nor be tested on (``skip`` only)."""
        if self.policy != "skip":
            return np.array([], dtype=np.int64)
        return np.array(sorted(f.image for f in self.failures), dtype=np.int64)

    def keep(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """``indices`` (of this image set) without the excluded images, in their order."""
        idx = np.asarray(indices, dtype=np.int64)
        excluded = self.excluded
        return idx if not len(excluded) else idx[~np.isin(idx, excluded)]

    @property
    def action(self) -> str:
        return ACTIONS[self.policy]

    def rows(self) -> list[list[Any]]:
        """The rows of ``feature_failures.csv`` (:data:`FEATURE_FAILURE_COLUMNS`)."""
        return [[f.image, f.path, f.label, self.method, self.set, f.cause, self.action] for f in self.failures]

    def describe(self) -> str:
        """One line for the run log."""
        what = {"train": "images", "test": "external test images"}.get(self.set, f"{self.set} images")
        if not self.failures:
            return f"features: no failed cells among {self.n_images} {what}"
        causes: dict[str, int] = {}
        for f in self.failures:
            causes[_cause_kind(f.cause)] = causes.get(_cause_kind(f.cause), 0) + 1
        listed = "; ".join(f"{n} × {c}" for c, n in sorted(causes.items(), key=lambda x: (-x[1], x[0])))
        then = {"keep": "kept for training and testing (on_feature_failure: keep)",
                "skip": "neither trained nor tested by this method (on_feature_failure: skip)",
                "stop": "the run stops (on_feature_failure: stop)"}[self.policy]
        return (f"features: {len(self.failures)} of {self.n_images} {what} failed ({listed}); {then}; "
                f"each is listed in {FEATURE_FAILURES_FILE}")


def _cause_kind(cause: str) -> str:
    """A cause without its numbers in brackets, for counting ("no contrast (green spread 3.1 < 30)")."""
    return cause.split(" (", 1)[0] or cause


class FeatureFailureError(DataError):
    """``on_feature_failure: stop`` and some cells failed; ``failures`` holds them all."""

    def __init__(self, message: str, failures: FeatureFailures) -> None:
        super().__init__(message)
        self.failures = failures


def failure_reasons(extractor: Any, F: np.ndarray, images: Any | None = None) -> list[str | None]:
    """``extractor.failure_reasons(F, images)`` checked (one entry per row; None for an extractor
    that does not declare :class:`ReportsFeatureFailures`: no row is known to have failed)."""
    n = int(np.shape(F)[0])
    if not isinstance(extractor, ReportsFeatureFailures):
        return [None] * n
    reasons = list(extractor.failure_reasons(F, images))
    name = type(extractor).__name__
    if len(reasons) != n:
        raise PluginError(f"feature extractor {name}: failure_reasons gave {len(reasons)} entries for {n} rows")
    bad = [r for r in reasons if r is not None and (not isinstance(r, str) or not r.strip())]
    if bad:
        raise PluginError(f"feature extractor {name}: failure_reasons must give None or a non-empty cause, "
                          f"got {bad[0]!r}")
    return reasons


def apply_feature_failures(extractor: Any, F: np.ndarray, images: Any, policy: str, method: str, *,
                           set_name: str = "train") -> FeatureFailures:
    """Find the cells whose features failed and apply the method's ``on_feature_failure`` policy.

    Parameters
    ----------
    extractor
        The (fitted) feature extractor that computed ``F``; one that does not declare
        :class:`ReportsFeatureFailures` reports no failures.
    F
        Its features of ``images``, one row per image, in order (from the feature cache).
    images
        The image set (``paths`` and ``labels`` name the failed cells).
    policy
        ``keep``, ``skip`` or ``stop`` (:class:`cytocompare.config.MethodSpec`).
    method
        The method's name (for the CSV and the messages).
    set_name
        ``"train"`` for the development set, ``"test"`` for an external test set.

    Returns
    -------
    FeatureFailures
        The failed cells; with ``skip``, :meth:`FeatureFailures.keep` filters a fold's indices.

    Raises
    ------
    FeatureFailureError
        With ``stop`` when any cell failed: one message naming the method, the files (up to
        :data:`MAX_NAMED`) and their causes; its ``failures`` has them all, for the CSV.
    ValueError
        An unknown policy, or ``F`` and ``images`` of different lengths.
    """
    if policy not in POLICIES:
        raise ValueError(f"on_feature_failure must be one of {', '.join(POLICIES)}, got {policy!r}")
    n = int(np.shape(F)[0])
    if len(images) != n:
        raise ValueError(f"{n} feature rows for {len(images)} images")
    reasons = failure_reasons(extractor, F, images)
    paths = [str(p) for p in getattr(images, "paths", [f"image {i}" for i in range(n)])]
    labels = [str(y) for y in getattr(images, "labels", [""] * n)]
    failed = tuple(FeatureFailure(i, paths[i], labels[i], r) for i, r in enumerate(reasons) if r is not None)
    result = FeatureFailures(method, policy, set_name, n, failed)  # type: ignore[arg-type]
    if failed and policy == "stop":
        named = "; ".join(f"{f.path} ({f.cause})" for f in failed[:MAX_NAMED])
        more = len(failed) - MAX_NAMED
        rest = f"; and {more} more, every one listed in {FEATURE_FAILURES_FILE}" if more > 0 else ""
        where = "images" if set_name == "train" else "external test images"
        raise FeatureFailureError(
            f"method {method!r}: the feature extractor {type(extractor).__name__} failed on {len(failed)} of "
            f"{n} {where} (on_feature_failure: stop): {named}{rest}. Remove or replace these files, or set "
            f"on_feature_failure: skip (leave them out for this method) or keep", result)
    return result


def filter_fold(fold: Fold, failures: Mapping[str, FeatureFailures], test_key: str = "test") -> Fold:
    """``fold`` without the cells its method skips (``on_feature_failure: skip``): neither in its
    training nor in its test part. ``failures`` maps the image set ("train", and ``test_key`` for
    the external test set of an external fold: "test", or "test:<name>" for a named set) to its
    :class:`FeatureFailures`; the same ``fold`` is returned when nothing is left out (always,
    under ``keep``)."""
    from cytocompare.splits import Fold

    train_ff = failures.get("train")
    test_ff = failures.get(test_key if fold.test_source == "external" else "train")
    train = fold.train if train_ff is None else train_ff.keep(fold.train)
    test = fold.test if test_ff is None else test_ff.keep(fold.test)
    if len(train) == len(fold.train) and len(test) == len(fold.test):
        return fold
    return Fold(train, test, fold.test_source)


# ---------------------------------------------------------------------------- the run directory's file
def record_feature_failures(run: RunDir, method: str, found: Sequence[FeatureFailures]) -> Any:
    """Write the failed cells of ``method`` (every image set it saw) to ``feature_failures.csv``.

    Rows of other methods are kept (a resumed run computes the features of the methods with
    folds left only), this method's rows are replaced; the file always exists after a feature
    step, with only the header when no cell failed. Returns its path.
    """
    path = run.path / FEATURE_FAILURES_FILE
    others = [r for r in read_feature_failures(run) if r["method"] != method] if path.is_file() else []
    rows = [[r[c] for c in FEATURE_FAILURE_COLUMNS] for r in others]
    for ff in found:
        rows += ff.rows()
    return run.write_csv(FEATURE_FAILURES_FILE, FEATURE_FAILURE_COLUMNS, rows)


def read_feature_failures(run: RunDir) -> list[dict[str, str]]:
    """The rows of ``feature_failures.csv`` ([] when the run has none)."""
    if not (run.path / FEATURE_FAILURES_FILE).is_file():
        return []
    return run.read_csv(FEATURE_FAILURES_FILE)


def failure_counts(run: RunDir) -> dict[tuple[str, str, str], int]:
    """(method, set, action) -> failed cells recorded in ``feature_failures.csv``."""
    out: dict[tuple[str, str, str], int] = {}
    for r in read_feature_failures(run):
        key = (r["method"], r["set"], r["action"])
        out[key] = out.get(key, 0) + 1
    return out


def failure_note(run: RunDir) -> str:
    """One sentence for the reports ("" when no cell failed): how many cells failed per method,
    what was done with them, and the file that lists them."""
    counts = failure_counts(run)
    if not counts:
        return ""
    explain = {"kept": "kept (trained and tested on as they are)",
               "skipped": "skipped (neither trained nor tested by this method)"}
    parts = []
    for (method, set_name, action), n in sorted(counts.items()):
        where = "" if set_name == "train" else " of the external test set"
        parts.append(f"{method}: {n} cell{'s' if n != 1 else ''}{where} {explain.get(action, action)}")
    return (f"Feature extraction failed on some cells. {'; '.join(parts)}. Each is listed with its cause in "
            f"{FEATURE_FAILURES_FILE}.")


__all__ = [
    "ACTIONS",
    "FEATURE_FAILURES_FILE",
    "FEATURE_FAILURE_COLUMNS",
    "FeatureFailure",
    "FeatureFailureError",
    "FeatureFailures",
    "POLICIES",
    "ReportsFeatureFailures",
    "apply_feature_failures",
    "failure_counts",
    "failure_note",
    "failure_reasons",
    "filter_fold",
    "read_feature_failures",
    "record_feature_failures",
]
