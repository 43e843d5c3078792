"""One split plan per run, computed once (seeded) and applied identically to every method.

Splits are made on *duplicate groups*: byte-identical files (same sha256) are one group and are
always on the same side of every split, so a model is never tested on an image it was trained
on. Groups are stratified by label with scikit-learn, then expanded back to image indices.

With a near-duplicate threshold (the protocol's ``near_duplicates.threshold``) and the images'
perceptual hashes (:mod:`cytocompare.near_duplicates`, computed in the data check), images whose
hashes are within the threshold are merged into one group too (a re-encoded or resized copy of a
cell), with the same guarantee. Byte-identical files with different labels are an error; a
near-duplicate group with different labels is a warning, and the group is stratified by its most
common label (ties: the first in sorted order).

The plan hash covers the near-duplicate threshold only when near-duplicates merged something
(a group of more than one distinct file content): a plan in which they changed nothing hashes
exactly as a plan made without them, so run directories of earlier versions keep resuming.

Classes too small for a split (fewer unique images than folds, or fewer than 2 for a holdout)
follow a policy: ``error`` (default), ``drop`` (left out of that split) or ``train_only``
(always on the training side, never tested). Every exclusion is recorded in the plan.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_serializer

from cytocompare.errors import SplitError

if TYPE_CHECKING:  # the module is imported only when near-duplicates are asked for
    from cytocompare.near_duplicates import NearDuplicateReport

__all__ = [
    "ExcludedClass", "ExternalSpec", "Fold", "HoldoutSpec", "KFoldSpec", "SplitPlan", "SplitSpec", "as_split_spec",
    "data_hash", "make_plan",
]

SmallClassPolicy = Literal["error", "drop", "train_only"]
_POLICIES = ("error", "drop", "train_only")
_FORMAT_VERSION = 1


class _SplitModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_serializer(mode="wrap")
    def _omit_default_switches(self, handler: Any) -> dict[str, Any]:
        # ``stratify``/``shuffle`` are written only when switched off, so the resolved protocol of
        # a protocol written before these keys existed is unchanged, and so is its digest (a run
        # directory refuses to resume under another digest)
        data = handler(self)
        for key in _SWITCHES:
            if data.get(key) is True:
                del data[key]
        if "test_set" in data and data["test_set"] is None:  # the same reason: an unnamed test set
            del data["test_set"]
        return data


_SWITCHES = ("stratify", "shuffle")


class HoldoutSpec(_SplitModel):
    """One stratified train/test split of the (unique) images."""

    kind: Literal["holdout"] = "holdout"
    test_size: float = Field(0.3, gt=0, lt=1, description="fraction of unique images in the test part")
    stratify: bool = Field(True, description="keep the class proportions on both sides")

    @property
    def min_per_class(self) -> int:
        """Unique images a class needs to be split by this spec."""
        return 2


class KFoldSpec(_SplitModel):
    """k folds; every (unique) image is tested exactly once."""

    kind: Literal["kfold"] = "kfold"
    n_splits: int = Field(5, ge=2, description="number of folds")
    stratify: bool = Field(True, description="keep the class proportions in every fold")
    shuffle: bool = Field(True, description="shuffle (seeded) before cutting the folds")

    @property
    def min_per_class(self) -> int:
        return self.n_splits


#: the name of the one test set of a protocol whose ``test_data`` is a single, unnamed set (its
#: files are ``test_dataset.csv``, ...; a named set ``pbc`` has ``test_pbc_dataset.csv``, ...)
UNNAMED_TEST_SET = ""


class ExternalSpec(_SplitModel):
    """Train on the whole training set, test on the protocol's separate ``test_data``."""

    kind: Literal["external"] = "external"
    test_set: str | None = Field(
        None, description="which of the protocol's named test_data sets this split tests on (needed when "
        "test_data names several; none: the one unnamed set)")

    @property
    def test_set_name(self) -> str:
        """The test set this split tests on (:data:`UNNAMED_TEST_SET` when ``test_set`` is none)."""
        return UNNAMED_TEST_SET if self.test_set is None else self.test_set

    @property
    def min_per_class(self) -> int:
        return 0


#: how one named split is made: the protocol's ``splits.<name>`` entries are these models
SplitSpec = Annotated[HoldoutSpec | KFoldSpec | ExternalSpec, Field(discriminator="kind")]
_SPEC_ADAPTER: TypeAdapter[Any] = TypeAdapter(SplitSpec)


def as_split_spec(spec: Any) -> HoldoutSpec | KFoldSpec | ExternalSpec:
    """The spec itself, or a mapping such as ``{"kind": "kfold", "n_splits": 5}`` validated by the
    very same models (:class:`SplitError` naming the problem when it is not a valid spec)."""
    if isinstance(spec, (HoldoutSpec, KFoldSpec, ExternalSpec)):
        return spec
    try:
        return _SPEC_ADAPTER.validate_python(dict(spec))
    except (ValidationError, TypeError, ValueError) as exc:
        raise SplitError(f"not a valid split spec {spec!r}: {exc}") from None


def _spec_record(spec: HoldoutSpec | KFoldSpec | ExternalSpec) -> dict[str, Any]:
    """The spec as format 1 of ``splits.json`` stores it and the plan hash covers it: the same five
    keys for every kind, a key the kind does not use holding the value format 1 always wrote, so
    that stored plans keep loading and keep their hash."""
    record = {
        "kind": spec.kind,
        "test_size": float(getattr(spec, "test_size", 0.2)),
        "n_splits": int(getattr(spec, "n_splits", 5)),
        "stratify": bool(getattr(spec, "stratify", True)),
        "shuffle": bool(getattr(spec, "shuffle", True)),
    }
    if getattr(spec, "test_set", None) is not None:  # a named test set (none: as format 1 wrote it)
        record["test_set"] = spec.test_set
    return record


def _spec_from_record(record: Mapping[str, Any]) -> HoldoutSpec | KFoldSpec | ExternalSpec:
    """Inverse of :func:`_spec_record` (the keys the kind uses; the others are format 1 filler)."""
    used = {"holdout": ("test_size", "stratify"), "kfold": ("n_splits", "stratify", "shuffle"),
            "external": ("test_set",)}
    kind = record.get("kind")
    if kind not in used:
        raise SplitError(f"stored split spec {dict(record)!r} has an unknown kind")
    return as_split_spec({"kind": kind, **{k: record[k] for k in used[kind] if k in record}})


@dataclass(frozen=True)
class Fold:
    """Train and test indices of one fold.

    ``train`` indexes the training data set. ``test`` indexes the same set when
    ``test_source == "train"``, or the separate test set of an external split.
    """

    train: np.ndarray
    test: np.ndarray
    test_source: Literal["train", "external"] = "train"


@dataclass(frozen=True)
class ExcludedClass:
    """A class too small for a split, and what was done with it."""

    split: str
    label: str
    n_unique: int
    required: int
    policy: Literal["drop", "train_only"]

    def describe(self) -> str:
        what = "left out of every fold" if self.policy == "drop" else "kept on the training side, never tested"
        return f"{self.split}: class {self.label!r} ({self.n_unique} unique images, needs {self.required}) {what}"


@dataclass
class SplitPlan:
    """Every split of a run: folds per split name, plus what was excluded and a hash.

    Use :func:`make_plan` to build one and :meth:`from_text` to read a stored one (the run
    directory's files: :meth:`cytocompare.rundir.RunDir.read_split_plan`).
    """

    seed: int
    specs: dict[str, HoldoutSpec | KFoldSpec | ExternalSpec]
    folds_by_split: dict[str, list[Fold]]
    labels: np.ndarray
    data_hash: str
    excluded: list[ExcludedClass] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: the labels of each external test set by name ("" : the one unnamed set)
    external: dict[str, np.ndarray] = field(default_factory=dict)
    #: :func:`data_hash` of each external test set
    external_hashes: dict[str, str] = field(default_factory=dict)
    #: set when near-duplicates merged distinct files: threshold, groups, images, mixed-label
    #: groups (stored in ``splits.json``; the threshold is then part of the hash)
    near_duplicate_info: dict[str, Any] | None = None
    #: the near-duplicate groups found (not stored: a plan read back from files has None)
    near_duplicates: NearDuplicateReport | None = None
    #: (training index, external index, distance) of near-identical train/external pairs that are
    #: not byte-identical (not stored)
    external_near: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)

    @property
    def external_labels(self) -> np.ndarray | None:
        """The labels of the unnamed external test set (None without one)."""
        return self.external.get("")

    @property
    def external_data_hash(self) -> str | None:
        return self.external_hashes.get("")

    @property
    def external_near_duplicates(self) -> list[tuple[int, int, int]]:
        """(training index, external index, distance) pairs of the unnamed test set."""
        return self.external_near.get("", [])

    # ---- access -------------------------------------------------------------------------
    @property
    def split_names(self) -> list[str]:
        """Split names, in the order given."""
        return list(self.specs)

    def folds(self, split_name: str) -> list[Fold]:
        """The folds of one split (one fold for holdout and external)."""
        try:
            return self.folds_by_split[split_name]
        except KeyError:
            raise SplitError(f"unknown split {split_name!r}; the plan has {', '.join(self.split_names)}") from None

    @property
    def hash(self) -> str:
        """sha256 over the seed, the specs, the data hash and every fold's assignment."""
        h = hashlib.sha256()
        h.update(f"v{_FORMAT_VERSION};seed={self.seed};data={self.data_hash};ext={self.external_data_hash}".encode())
        for name in sorted(n for n in self.external_hashes if n):  # named test sets (none: format 1's hash)
            h.update(f";ext[{name}]={self.external_hashes[name]}".encode())
        if self.near_duplicate_info is not None:
            h.update(f";near={int(self.near_duplicate_info['threshold'])}".encode())
        for name in self.split_names:
            h.update(f";{name}={json.dumps(_spec_record(self.specs[name]), sort_keys=True)}".encode())
            for k, fold in enumerate(self.folds_by_split[name]):
                h.update(f";fold{k}:{fold.test_source}:".encode())
                h.update(np.asarray(fold.train, dtype="<i8").tobytes())
                h.update(b"|")
                h.update(np.asarray(fold.test, dtype="<i8").tobytes())
        return h.hexdigest()

    def verify_data(self, labels: np.ndarray, sha256: np.ndarray) -> None:
        """Raise :class:`SplitError` unless ``labels``/``sha256`` are the data the plan was made on."""
        current = data_hash(labels, sha256)
        if current != self.data_hash:
            raise SplitError(
                f"the data set changed since the split plan was made (data hash {current[:12]}... "
                f"vs stored {self.data_hash[:12]}...); start a new run directory or restore the data"
            )

    # ---- writing --------------------------------------------------------------------------
    def column_names(self) -> list[str]:
        """``<split>/fold-<k>`` for every fold, in order."""
        return [f"{name}/fold-{k}" for name in self.split_names for k in range(len(self.folds_by_split[name]))]

    def csv_table(self, paths: Sequence[str] | np.ndarray,
                  labels: Sequence[str] | np.ndarray) -> tuple[list[str], list[list[Any]]]:
        """The rows of ``splits.csv``: ``index,path,label`` and one ``train``/``test``/``-`` column
        per fold (the run directory writes them, :meth:`cytocompare.rundir.RunDir.write_split_plan`).

        For an external split the test images belong to another data set, so its column only
        says which training images were used (``train``) or not (``-``).
        """
        n = len(self.labels)
        if len(paths) != n or len(labels) != n:
            raise SplitError(f"splits.csv: {len(paths)} paths and {len(labels)} labels for a plan of {n} images")
        columns = []
        for name in self.split_names:
            for fold in self.folds_by_split[name]:
                col = np.full(n, "-", dtype=object)
                col[fold.train] = "train"
                if fold.test_source == "train":
                    col[fold.test] = "test"
                columns.append(col)
        header = ["index", "path", "label", *self.column_names()]
        return header, [[i, paths[i], labels[i], *(c[i] for c in columns)] for i in range(n)]

    def near_duplicate_table(self) -> tuple[list[str], list[list[Any]]]:
        """The rows of ``near_duplicates.csv``: one per image in a group of more than one
        (``group,path,label,nearest,distance``; byte-identical copies have distance 0). Only
        header when none was found or no hashes were given."""
        header = ["group", "path", "label", "nearest", "distance"]
        if self.near_duplicates is None:
            return header, []
        return header, [[r[k] for k in header] for r in self.near_duplicates.rows()]

    def external_near_duplicate_table(self, paths: Sequence[str] | np.ndarray,
                                      external_paths: Sequence[str] | np.ndarray,
                                      test_set: str = "") -> tuple[list[str], list[list[Any]]]:
        """The rows of ``test_near_duplicates.csv``: training image, external test image and their
        distance, for every near-identical pair that is not byte-identical (header only if none)."""
        header = ["path", "test_path", "distance"]
        return header, [[paths[i], external_paths[j], d] for i, j, d in self.external_near.get(test_set, [])]

    def test_set_of(self, split_name: str) -> str:
        """The test set an external split tests on (:data:`UNNAMED_TEST_SET`: the unnamed one)."""
        spec = self.specs[split_name]
        return spec.test_set_name if isinstance(spec, ExternalSpec) else UNNAMED_TEST_SET

    def summary(self) -> dict[str, Any]:
        """The JSON-able description that is ``splits.json`` (:meth:`to_json_text`)."""
        splits: dict[str, Any] = {}
        for name in self.split_names:
            folds = []
            for k, fold in enumerate(self.folds_by_split[name]):
                test_labels = self.labels if fold.test_source == "train" else self.external.get(self.test_set_of(name))
                folds.append({
                    "fold": k,
                    "test_source": fold.test_source,
                    "n_train": int(len(fold.train)),
                    "n_test": int(len(fold.test)),
                    "train_counts": _counts(self.labels[fold.train]),
                    "test_counts": _counts(test_labels[fold.test]) if test_labels is not None else {},
                })
            splits[name] = {"spec": _spec_record(self.specs[name]), "folds": folds}
        return {
            "format_version": _FORMAT_VERSION,
            "seed": self.seed,
            "n_images": int(len(self.labels)),
            "data_hash": self.data_hash,
            "n_external": None if self.external_labels is None else int(len(self.external_labels)),
            "external_data_hash": self.external_data_hash,
            **({} if not any(self.external_hashes) else {"external_sets": {
                n: {"n_images": int(len(self.external[n])), "data_hash": h}
                for n, h in sorted(self.external_hashes.items()) if n}}),
            "splits": splits,
            "excluded": [asdict(e) | {"description": e.describe()} for e in self.excluded],
            "warnings": list(self.warnings),
            **({} if self.near_duplicate_info is None else {"near_duplicates": dict(self.near_duplicate_info)}),
            "hash": self.hash,
        }

    def to_json_text(self) -> str:
        """``splits.json``: seed, specs, per-fold class counts, excluded classes and the plan hash."""
        return json.dumps(self.summary(), indent=2) + "\n"

    # ---- reading ------------------------------------------------------------------------
    @classmethod
    def from_text(
        cls,
        json_text: str,
        csv_text: str,
        *,
        json_name: str = "splits.json",
        csv_name: str = "splits.csv",
        labels: np.ndarray | Sequence[str] | None = None,
        sha256: np.ndarray | Sequence[str] | None = None,
        external_labels: np.ndarray | Sequence[str] | None = None,
    ) -> SplitPlan:
        """Read a plan from the texts of ``splits.json`` and ``splits.csv``.

        Parameters
        ----------
        json_text, csv_text : str
            The two files' contents (:meth:`cytocompare.rundir.RunDir.read_split_plan` reads them).
        json_name, csv_name : str
            What to call the files in error messages.
        labels, sha256 : arrays, optional
            The current data set; when given, a changed data set raises :class:`SplitError`.
        external_labels : array, optional
            Labels of the external test set (for its class counts).

        Raises
        ------
        SplitError
            Inconsistent files, a changed data set, or an edited plan (hash mismatch).
        """
        meta = json.loads(json_text)
        stored_labels, columns = _read_plan_csv(csv_text, csv_name)
        specs = {name: _spec_from_record(s["spec"]) for name, s in meta["splits"].items()}
        folds_by_split: dict[str, list[Fold]] = {}
        for name, s in meta["splits"].items():
            folds_by_split[name] = [
                _fold_from_column(columns, f"{name}/fold-{f['fold']}", f, meta.get("n_external"), csv_name)
                for f in s["folds"]
            ]
        ext = {} if external_labels is None else {"": np.asarray(external_labels, dtype=object).astype(str)}
        hashes = {} if meta.get("external_data_hash") is None else {"": meta["external_data_hash"]}
        for name, stored in (meta.get("external_sets") or {}).items():
            hashes[name] = stored["data_hash"]
        plan = cls(
            seed=int(meta["seed"]),
            specs=specs,
            folds_by_split=folds_by_split,
            labels=stored_labels,
            data_hash=meta["data_hash"],
            excluded=[ExcludedClass(**{k: v for k, v in e.items() if k != "description"}) for e in meta["excluded"]],
            warnings=list(meta.get("warnings", [])),
            external=ext,
            external_hashes=hashes,
            near_duplicate_info=meta.get("near_duplicates"),
        )
        if plan.hash != meta["hash"]:
            raise SplitError(
                f"{json_name}: the stored plan hash does not match the folds in {csv_name}; "
                "the files were edited or mixed up"
            )
        if labels is not None and sha256 is not None:
            plan.verify_data(np.asarray(labels), np.asarray(sha256))
        elif labels is not None and list(np.asarray(labels).astype(str)) != list(stored_labels):
            raise SplitError(f"{csv_name}: the labels differ from the current data set's")
        return plan


# --------------------------------------------------------------------------------------------
# making a plan
# --------------------------------------------------------------------------------------------


def data_hash(labels: np.ndarray | Sequence[str], sha256: np.ndarray | Sequence[str]) -> str:
    """sha256 over the ordered (label, content hash) pairs: changes when any image or label does."""
    h = hashlib.sha256()
    for label, sha in zip(np.asarray(labels).astype(str), np.asarray(sha256).astype(str)):
        h.update(f"{label}\t{sha}\n".encode())
    return h.hexdigest()


def make_plan(
    labels: np.ndarray | Sequence[str],
    sha256: np.ndarray | Sequence[str],
    splits: Mapping[str, HoldoutSpec | KFoldSpec | ExternalSpec | Mapping[str, Any]],
    seed: int,
    small_classes: SmallClassPolicy = "error",
    *,
    paths: np.ndarray | Sequence[str] | None = None,
    external_labels: np.ndarray | Sequence[str] | None = None,
    external_sha256: np.ndarray | Sequence[str] | None = None,
    near_duplicate_hashes: np.ndarray | None = None,
    near_duplicate_threshold: int | None = None,
    external_near_duplicate_hashes: np.ndarray | None = None,
    external_paths: np.ndarray | Sequence[str] | None = None,
    external_sets: Mapping[str, ExternalSet] | None = None,
    n_jobs: int = 1,
) -> SplitPlan:
    """Compute every split of a run once.

    Parameters
    ----------
    labels, sha256 : arrays of str, length n
        Class label and content hash of every training-set image.
    splits : mapping of name to HoldoutSpec / KFoldSpec / ExternalSpec
        (or a mapping validated by them, see :func:`as_split_spec`)
    seed : int
        Seeds every random split: same inputs and seed give the same plan and hash.
    small_classes : {"error", "drop", "train_only"}
        What to do with a class with fewer unique images than a split needs.
    paths : array of str, optional
        Used to name files in error messages (conflicting duplicates).
    external_labels, external_sha256 : arrays, optional
        The separate test set of an ``external`` split.
    near_duplicate_hashes : (n, 2) uint64 array, optional
        Perceptual hashes of the training images
        (:attr:`cytocompare.datasets.LoadedDataset.perceptual_hashes`).
    near_duplicate_threshold : int, optional
        Hamming distance at or below which two images are one group (the protocol's
        ``near_duplicates.threshold``). None: byte-identical files only.
    external_near_duplicate_hashes : array, optional
        Perceptual hashes of the external test set: training/test pairs within the threshold
        that are not byte-identical are a warning (and :attr:`SplitPlan.external_near_duplicates`).
    external_paths : array of str, optional
        Names the external images in that warning.
    external_sets : mapping of name to ExternalSet, optional
        Named external test sets (the protocol's ``test_data: {name: ...}``); an external split
        tests on the one its spec's ``test_set`` names. The ``external_*`` arguments above are the
        unnamed set (``test_set`` none).
    n_jobs : int
        Threads of the near-duplicate pair search.

    Returns
    -------
    SplitPlan

    Raises
    ------
    SplitError
        Identical files with different labels, a class too small under ``error``, a split
        that cannot be made, or an external split without an external set.
    """
    if small_classes not in _POLICIES:
        raise SplitError(f"small_classes must be one of {', '.join(_POLICIES)}, not {small_classes!r}")
    labels = np.asarray(labels, dtype=object).astype(str)
    sha = np.asarray(sha256, dtype=object).astype(str)
    if len(labels) != len(sha):
        raise SplitError(f"{len(labels)} labels but {len(sha)} hashes")
    if len(labels) == 0:
        raise SplitError("cannot split an empty data set")
    if paths is None:
        paths = [f"#{i}" for i in range(len(labels))]
    names = np.asarray(paths, dtype=object)
    warnings: list[str] = []
    report = None
    if near_duplicate_threshold is not None:
        if near_duplicate_hashes is None:
            raise SplitError("a near-duplicate threshold was given without the images' perceptual hashes")
        from cytocompare.near_duplicates import as_hashes, find_near_duplicates

        h = as_hashes(near_duplicate_hashes)
        if len(h) != len(labels):
            raise SplitError(f"{len(labels)} labels but {len(h)} perceptual hashes")
        report = find_near_duplicates(h, [str(x) for x in names], labels.tolist(),
                                      threshold=int(near_duplicate_threshold), n_jobs=n_jobs)
    groups = _DuplicateGroups.build(labels, sha, names, None if report is None else report.group_ids, warnings)
    near_info = None
    if report is not None and groups.n_merged:
        near_info = {"threshold": int(near_duplicate_threshold), "groups": groups.n_merged,
                     "images": groups.n_in_merged, "mixed_label_groups": groups.n_mixed}

    specs = {name: as_split_spec(s) for name, s in splits.items()}
    if not specs:
        raise SplitError("no splits were asked for")
    sets = dict(external_sets or {})
    if external_labels is not None:
        if "" in sets:
            raise SplitError("the unnamed external set was given twice (external_labels and external_sets[''])")
        sets[""] = ExternalSet(external_labels, external_sha256, external_near_duplicate_hashes, external_paths)
    sets = {n: e.checked() for n, e in sets.items()}
    excluded: list[ExcludedClass] = []
    folds_by_split: dict[str, list[Fold]] = {}
    for name, spec in specs.items():
        small = _small_classes(name, spec, groups, small_classes, excluded)
        if spec.kind == "external":
            wanted = spec.test_set_name
            if wanted != UNNAMED_TEST_SET and wanted not in sets:
                raise SplitError(f"split {name!r} tests on the external set {wanted!r}, which was not given "
                                 f"(given: {', '.join(repr(n) for n in sets) or 'none'})")
            chosen = sets.get(wanted)
            folds_by_split[name] = [_external_fold(name, groups, None if chosen is None else chosen.labels)]
        elif spec.kind == "holdout":
            folds_by_split[name] = [_holdout_fold(name, spec, groups, small, seed)]
        else:
            folds_by_split[name] = _kfold_folds(name, spec, groups, small, seed)
    ext_near: dict[str, list[tuple[int, int, int]]] = {}
    for set_name, ext in sets.items():
        what = f"the external test set {set_name!r}" if set_name else "the external test set"
        if ext.sha256 is not None:
            _warn_external_overlap(sha, ext.sha256, warnings, what)
        if near_duplicate_threshold is not None and ext.perceptual_hashes is not None:
            ext_near[set_name] = _warn_external_near(
                near_duplicate_hashes, ext.perceptual_hashes, int(near_duplicate_threshold), sha, ext.sha256, names,
                ext.paths, n_jobs, warnings, what)
    return SplitPlan(
        seed=int(seed),
        specs=specs,
        folds_by_split=folds_by_split,
        labels=labels,
        data_hash=data_hash(labels, sha),
        excluded=excluded,
        warnings=warnings,
        external={n: e.labels for n, e in sets.items()},
        external_hashes={n: data_hash(e.labels, e.sha256 if e.sha256 is not None else e.labels)
                         for n, e in sets.items()},
        near_duplicate_info=near_info,
        near_duplicates=report,
        external_near=ext_near,
    )


@dataclass(frozen=True)
class ExternalSet:
    """One external test set as the split plan sees it: its labels (for class counts and its
    data hash), and optionally its content hashes, perceptual hashes and paths (for the warnings
    about images it shares with the training set)."""

    labels: np.ndarray | Sequence[str]
    sha256: np.ndarray | Sequence[str] | None = None
    perceptual_hashes: np.ndarray | None = None
    paths: np.ndarray | Sequence[str] | None = None

    def checked(self) -> ExternalSet:
        """The same set with numpy string arrays."""
        labels = np.asarray(self.labels, dtype=object).astype(str)
        sha = None if self.sha256 is None else np.asarray(self.sha256, dtype=object).astype(str)
        return ExternalSet(labels, sha, self.perceptual_hashes, self.paths)


@dataclass(frozen=True)
class _DuplicateGroups:
    """Images grouped by identical content: ``of_image[i]`` is image i's group."""

    of_image: np.ndarray  # (n,) group id per image
    labels: np.ndarray  # (g,) label per group
    n_merged: int = 0  # groups holding more than one distinct content (near-duplicates)
    n_in_merged: int = 0  # images in those groups
    n_mixed: int = 0  # of them, groups whose images carry different labels

    @classmethod
    def build(cls, labels: np.ndarray, sha: np.ndarray, names: np.ndarray,
              near_ids: np.ndarray | None = None, warnings: list[str] | None = None) -> _DuplicateGroups:
        # np.unique sorts, so group ids do not depend on the order of first appearance
        _, of_image = np.unique(sha, return_inverse=True)
        of_image = of_image.ravel()
        n_groups = int(of_image.max()) + 1
        group_labels = np.empty(n_groups, dtype=object)
        group_labels[of_image] = labels
        conflicts = np.flatnonzero(group_labels[of_image] != labels)
        if len(conflicts):
            cls._raise_conflict(of_image, labels, names, conflicts)
        if near_ids is None:
            return cls(of_image, group_labels.astype(str))
        return cls._merge_near(of_image, labels, names, np.asarray(near_ids).ravel(), n_groups,
                               group_labels.astype(str), warnings if warnings is not None else [])

    @classmethod
    def _merge_near(cls, of_image: np.ndarray, labels: np.ndarray, names: np.ndarray, near_ids: np.ndarray,
                    n_groups: int, byte_labels: np.ndarray, warnings: list[str]) -> _DuplicateGroups:
        """Merge the byte groups linked by near-duplicate groups. Merged groups are numbered by
        their smallest byte group, so without a merge the groups (and the plan) are unchanged."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        # link every image's byte group to the byte group of the first image of its near group
        _, first = np.unique(near_ids, return_index=True)
        anchor = of_image[first][np.searchsorted(np.unique(near_ids), near_ids)]
        graph = coo_matrix((np.ones(len(of_image), np.int8), (of_image, anchor)), shape=(n_groups, n_groups))
        _, comp = connected_components(graph, directed=False)
        smallest = np.full(int(comp.max()) + 1, n_groups, dtype=np.int64)
        np.minimum.at(smallest, comp, np.arange(n_groups))
        rank = np.empty(len(smallest), np.int64)
        rank[np.argsort(smallest, kind="stable")] = np.arange(len(smallest))
        merged_of_byte = rank[comp]
        n_merged_groups = len(smallest)
        if n_merged_groups == n_groups:
            return cls(of_image, byte_labels)
        new_of_image = merged_of_byte[of_image]
        group_labels = np.empty(n_merged_groups, dtype=object)
        group_labels[merged_of_byte] = byte_labels  # a mixed group's label is settled below
        sizes = np.bincount(merged_of_byte, minlength=n_merged_groups)
        merged = np.flatnonzero(sizes > 1)  # merged groups of more than one distinct content
        mixed: list[tuple[int, Counter[str]]] = []
        n_in = 0
        for g in merged:
            members = np.flatnonzero(new_of_image == g)
            n_in += len(members)
            counts = Counter(labels[members].tolist())
            if len(counts) > 1:
                # the most common label; ties broken by the label, so the plan is deterministic
                group_labels[g] = min(counts, key=lambda c: (-counts[c], c))
                mixed.append((int(g), counts))
        if mixed:
            lines = []
            for g, counts in mixed[:5]:
                members = np.flatnonzero(new_of_image == g)
                lines.append(", ".join(f"{names[i]} ({labels[i]})" for i in members[:6])
                             + (f", ... ({len(members)} images)" if len(members) > 6 else ""))
            more = f"; ... and {len(mixed) - 5} more group(s)" if len(mixed) > 5 else ""
            warnings.append(
                f"{len(mixed)} near-duplicate group(s) carry different labels (each is split as one group, "
                "stratified by its most common label): " + "; ".join(lines) + more)
        return cls(new_of_image, group_labels.astype(str), len(merged), n_in, len(mixed))

    @staticmethod
    def _raise_conflict(of_image: np.ndarray, labels: np.ndarray, names: np.ndarray, conflicts: np.ndarray) -> None:
        bad_groups = sorted(set(of_image[conflicts].tolist()))
        lines = []
        for g in bad_groups[:5]:
            members = np.flatnonzero(of_image == g)
            lines.append("  " + ", ".join(f"{names[i]} ({labels[i]})" for i in members))
        more = f"\n  ... and {len(bad_groups) - 5} more group(s)" if len(bad_groups) > 5 else ""
        raise SplitError(
            f"{len(bad_groups)} group(s) of byte-identical files carry different labels:\n"
            + "\n".join(lines) + more + "\nfix the labels or remove the duplicates"
        )

    def images_of(self, group_ids: np.ndarray) -> np.ndarray:
        """Sorted image indices of the given groups."""
        mask = np.zeros(len(self.labels), dtype=bool)
        mask[group_ids] = True
        return np.flatnonzero(mask[self.of_image])


@dataclass(frozen=True)
class _Small:
    """Groups of the classes a split drops or keeps on the training side."""

    dropped: frozenset[str]
    train_only: frozenset[str]


def _small_classes(
    name: str, spec: HoldoutSpec | KFoldSpec | ExternalSpec, groups: _DuplicateGroups, policy: str, excluded: list[ExcludedClass]
) -> _Small:
    """Apply the small-class policy for one split; record every exclusion."""
    need = spec.min_per_class
    counts = Counter(groups.labels.tolist())
    small = {c: n for c, n in sorted(counts.items()) if n < need}
    if small and policy == "error":
        listed = ", ".join(f"{c!r} ({n} unique images)" for c, n in small.items())
        what = f"{spec.n_splits}-fold split" if spec.kind == "kfold" else "holdout split"
        raise SplitError(
            f"split {name!r}: class(es) {listed} have fewer unique images than the {what} needs ({need}); "
            "set small_classes to 'drop' (leave them out) or 'train_only' (train on them, never test), "
            "or exclude them from the data set"
        )
    for c, n in small.items():
        excluded.append(ExcludedClass(name, c, int(n), need, policy))  # type: ignore[arg-type]
    return _Small(
        frozenset(small) if policy == "drop" else frozenset(),
        frozenset(small) if policy == "train_only" else frozenset(),
    )


def _eligible(groups: _DuplicateGroups, small: _Small) -> tuple[np.ndarray, np.ndarray]:
    """(groups to split, groups always on the training side)."""
    g_labels = groups.labels
    out = np.isin(g_labels, list(small.dropped | small.train_only))
    train_only = np.flatnonzero(np.isin(g_labels, list(small.train_only)))
    return np.flatnonzero(~out), train_only


def _holdout_fold(name: str, spec: HoldoutSpec | KFoldSpec | ExternalSpec, groups: _DuplicateGroups, small: _Small, seed: int) -> Fold:
    from sklearn.model_selection import train_test_split

    eligible, train_only = _eligible(groups, small)
    strat = groups.labels[eligible] if spec.stratify else None
    try:
        train_g, test_g = train_test_split(eligible, test_size=spec.test_size, stratify=strat, random_state=seed)
    except ValueError as exc:
        raise SplitError(f"split {name!r}: cannot make a holdout of {len(eligible)} unique images ({exc})") from None
    train = groups.images_of(np.concatenate([train_g, train_only]))
    return Fold(train, groups.images_of(test_g), "train")


def _kfold_folds(name: str, spec: HoldoutSpec | KFoldSpec | ExternalSpec, groups: _DuplicateGroups, small: _Small, seed: int) -> list[Fold]:
    from sklearn.model_selection import KFold, StratifiedKFold

    eligible, train_only = _eligible(groups, small)
    if len(eligible) < spec.n_splits:
        raise SplitError(f"split {name!r}: {len(eligible)} unique images cannot fill {spec.n_splits} folds")
    random_state = seed if spec.shuffle else None
    if spec.stratify:
        splitter: Any = StratifiedKFold(spec.n_splits, shuffle=spec.shuffle, random_state=random_state)
    else:
        splitter = KFold(spec.n_splits, shuffle=spec.shuffle, random_state=random_state)
    folds = []
    for train_pos, test_pos in splitter.split(np.zeros(len(eligible)), groups.labels[eligible]):
        train = groups.images_of(np.concatenate([eligible[train_pos], train_only]))
        folds.append(Fold(train, groups.images_of(eligible[test_pos]), "train"))
    return folds


def _external_fold(name: str, groups: _DuplicateGroups, ext_labels: np.ndarray | None) -> Fold:
    if ext_labels is None:
        raise SplitError(f"split {name!r} is external but no external test set was given (external_labels)")
    train = np.arange(len(groups.of_image), dtype=np.int64)
    return Fold(train, np.arange(len(ext_labels), dtype=np.int64), "external")


def _warn_external_overlap(sha: np.ndarray, ext_sha: np.ndarray, warnings: list[str],
                            what: str = "the external test set") -> None:
    shared = np.intersect1d(sha, ext_sha)
    if len(shared):
        warnings.append(f"{len(shared)} image(s) of {what} are byte-identical to training images")


def _warn_external_near(
    hashes: Any, ext_hashes: Any, threshold: int, sha: np.ndarray, ext_sha: np.ndarray | None,
    names: np.ndarray, ext_paths: Any, n_jobs: int, warnings: list[str], what: str = "the external test set",
) -> list[tuple[int, int, int]]:
    """Train/external pairs within ``threshold`` that are not byte-identical (those have their
    own warning): a warning naming a few, and the pairs."""
    from cytocompare.near_duplicates import near_duplicate_pairs

    i, j, d = near_duplicate_pairs(hashes, threshold, other=ext_hashes, n_jobs=n_jobs)
    if ext_sha is not None and len(i):
        keep = sha[i] != ext_sha[j]
        i, j, d = i[keep], j[keep], d[keep]
    if not len(i):
        return []
    ext_names = (np.asarray(ext_paths, dtype=object) if ext_paths is not None
                 else np.asarray([f"test #{k}" for k in range(int(j.max()) + 1)], dtype=object))
    examples = ", ".join(f"{ext_names[b]} ~ {names[a]} (distance {c})" for a, b, c in list(zip(i, j, d))[:3])
    warnings.append(
        f"{len(np.unique(j))} image(s) of {what} are near-duplicates of training images "
        f"(perceptual hash distance <= {threshold}, not byte-identical), e.g. {examples}")
    return [(int(a), int(b), int(c)) for a, b, c in zip(i, j, d)]


def _counts(labels: np.ndarray) -> dict[str, int]:
    return {k: int(v) for k, v in sorted(Counter(np.asarray(labels).tolist()).items())}


def _read_plan_csv(text: str, name: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(labels, fold column name -> array of 'train'/'test'/'-') from the text of ``splits.csv``."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None or header[:3] != ["index", "path", "label"]:
        raise SplitError(f"{name}: not a splits.csv (expected columns index,path,label,...)")
    rows = list(reader)
    for i, row in enumerate(rows):
        if len(row) != len(header) or row[0] != str(i):
            raise SplitError(f"{name}, row {i + 2}: malformed (expected index {i} and {len(header)} columns)")
    labels = np.asarray([r[2] for r in rows], dtype=object).astype(str)
    columns = {name: np.asarray([r[j] for r in rows], dtype=object) for j, name in enumerate(header) if j >= 3}
    return labels, columns


def _fold_from_column(
    columns: dict[str, np.ndarray], col: str, meta: dict[str, Any], n_external: int | None, path: str
) -> Fold:
    if col not in columns:
        raise SplitError(f"{path}: column {col!r} is missing")
    values = columns[col]
    bad = set(values.tolist()) - {"train", "test", "-"}
    if bad:
        raise SplitError(f"{path}: column {col!r} has values {sorted(bad)}; expected train, test or -")
    train = np.flatnonzero(values == "train").astype(np.int64)
    if meta["test_source"] == "external":  # every image of its test set (n_test: a named set's size)
        return Fold(train, np.arange(int(meta.get("n_test", n_external or 0)), dtype=np.int64), "external")
    return Fold(train, np.flatnonzero(values == "test").astype(np.int64), "train")
