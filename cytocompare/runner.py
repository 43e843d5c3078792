"""The runner: one split plan, applied identically to every method; resumable; all output in files.

A run directory is filled fold by fold. Each fold's predictions are written the moment they
exist (atomically), so an interrupted run loses at most the fold in progress, and running the
same protocol into the same directory again resumes at the first unfinished fold.

The runner knows components only through :mod:`cytocompare.protocols`: the component protocols,
the optional capabilities (:class:`~cytocompare.protocols.Checkpointing`,
:class:`~cytocompare.protocols.WritesArtifacts`, :class:`~cytocompare.protocols.ReportsFit`) and
the injection rule of :func:`protocol_defaults`. Every file it writes goes through
:class:`~cytocompare.rundir.RunDir`.

A run has two phases (:meth:`Runner.run`). First every check, in memory, with the run
directory locked and nothing in it written: the protocol against the registry, how the directory
may be used (:meth:`RunDir.claim <cytocompare.rundir.RunDir.claim>`), the feature cache, the data
and its labels, the split plan (a resumed run must find the same one). Only then the writes and
the work. A run that stops records why in ``run.json`` (``failed`` or ``interrupted``) where
that loses nothing: never in a finished run whose resume was refused.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cytocompare import __version__
from cytocompare.base import clone
from cytocompare.classes import ClassScheme, load_scheme
from cytocompare.config import (
    UNNAMED_TEST_SET,
    ComponentRef,
    MethodSpec,
    Protocol,
    check_against_registry,
    test_file_prefix,
)
from cytocompare.datasets import UNMAPPED, resolve_data_path
from cytocompare import distributed
from cytocompare.errors import CytocompareError, DataError, OutputError, ProtocolError
from cytocompare.images import ImageSet
from cytocompare.locking import DirectoryLock
from cytocompare.matching import match_test_set
from cytocompare.pipeline import Pipeline
from cytocompare.plugins import get_plugin_manager, get_registry, plugin_distributions
from cytocompare import progress as _progress
from cytocompare.protocols import Checkpointing, ReportsFit, WritesArtifacts
from cytocompare.registry import Kind, Registry, protocol_defaults
from cytocompare.rundir import Claim, RunDir, RunInfo, utc_now
from cytocompare.splits import Fold, SplitPlan

Log = Callable[[str], None]
ProgressCallback = Callable[[int, int], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def throttled_progress(log: Log, every_s: float, line: Callable[[int, int], str],
                       description: str | None = None, unit: str = "images") -> ProgressCallback:
    """A ``progress(done, total)`` callback that logs ``line(done, total)`` at most every
    ``every_s`` seconds, and always at the end; when ``log`` is a :class:`cytocompare.progress.Progress`,
    its own (a live bar called ``description`` on a terminal, the same lines elsewhere)."""
    own = _progress.throttled(log, every_s, line, description or "", unit)
    if own is not None:
        return own
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > every_s or done == total:
            last[0] = now
            log(line(done, total))

    return progress


@dataclass
class RunResult:
    run_dir: Path
    methods_run: list[str]
    methods_skipped: list[str]
    folds_done: int
    folds_resumed: int
    outputs: list[Path] = field(default_factory=list)


def default_cache_dir(protocol: Protocol) -> Path:
    if protocol.cache_dir:
        return Path(protocol.cache_dir).expanduser()
    env = os.environ.get("CYTOCOMPARE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cytocompare"


def ordered_labels(present: set[str], scheme: ClassScheme) -> list[str]:
    """Scheme order first (so tables read like the paper's), then any other labels sorted."""
    known = [c for c in scheme.codes if c in present]
    return known + sorted(present - set(known))


def build_method(method: MethodSpec, registry: Registry, seed: int, n_jobs: int = 1) -> Pipeline:
    """Instantiate a method's components as a :class:`Pipeline`.

    ``method`` must come from a protocol checked by :func:`cytocompare.config.check_against_registry`
    (which checks every name and parameter): nothing is checked again here.
    """
    def make(kind: Kind, ref: ComponentRef | None) -> Any:
        if ref is None:
            return None
        factory = registry.get(kind, ref.name).load()
        return factory(**protocol_defaults(kind, ref.params, factory, seed=seed, n_jobs=n_jobs))

    return Pipeline(
        features=make("feature_extractor", method.features),
        selector=make("feature_selector", method.selector),
        classifier=make("classifier", method.classifier),
    )


@dataclass(frozen=True)
class FoldTask:
    """One fold of one method on one split: what every step of a fold is told."""

    method_name: str
    method: MethodSpec
    split: str
    k: int
    fold: Fold
    tag: str  # "[method | split | fold k/n]", the prefix of every log line
    #: the test set of an external split ("" : the unnamed one; cytocompare.config.UNNAMED_TEST_SET)
    test_set: str = ""

    @property
    def external(self) -> bool:
        return self.fold.test_source == "external"

    @property
    def test_key(self) -> str:
        """The image set the fold's test indices point into: "train", or an external set's key."""
        return test_set_key(self.test_set) if self.external else "train"


def test_set_key(name: str) -> str:
    """The key of an external test set among a method's image sets (features, feature failures):
    "test" for the unnamed one, "test:<name>" for a named one."""
    return "test" if name == UNNAMED_TEST_SET else f"test:{name}"


@dataclass(frozen=True)
class RunData:
    """The images of a run and, per method with a feature extractor, their features."""

    train: ImageSet
    #: the external test sets a method needs, by name ("" : the unnamed one)
    tests: dict[str, ImageSet] = field(default_factory=dict)
    #: file prefix ("", "test_" or "test_<name>_") -> the loaded data set, written once every check has passed
    loaded: dict[str, Any] = field(default_factory=dict)
    #: how each external test set was matched to the training set (cytocompare.matching.TestMatching)
    matchings: dict[str, Any] = field(default_factory=dict)

    def test_set(self, task: FoldTask) -> ImageSet:
        """The images a fold is tested on (its test indices point into this set)."""
        if not task.external:
            return self.train
        if task.test_set not in self.tests:
            raise CytocompareError(f"{task.tag}: external split but its test set was not loaded")
        return self.tests[task.test_set]


@dataclass
class FittedFold:
    """A fitted model, its predictions on the fold's test images, and the times taken."""

    model: Pipeline
    prediction: np.ndarray
    scores: np.ndarray | None
    fit_seconds: float
    predict_seconds: float
    #: the external split whose fit this fold's model is (one fit for every external set), or None
    fitted_for: str | None = None


class Runner:
    """Runs a protocol into a run directory.

    The protocol is checked against the registry once, at the start of :meth:`run` (the CLI only
    parses it); ``protocol_path`` names it in error messages and anchors its relative data paths.
    """

    def __init__(
        self,
        protocol: Protocol,
        run_dir: str | Path,
        *,
        protocol_path: str | Path | None = None,
        data_path: str | None = None,
        test_data_path: str | None = None,
        only: list[str] | None = None,
        registry: Registry | None = None,
        log: Log = _stderr,
    ) -> None:
        self.protocol = protocol.model_copy(deep=True)
        self.origin = str(protocol_path) if protocol_path else "<protocol>"
        base = Path(protocol_path).resolve().parent if protocol_path else Path.cwd()
        # data paths in a protocol are relative to the protocol file; CLI overrides to the cwd
        self.protocol.data.path = data_path or resolve_data_path(self.protocol.data.path, base)
        for name, spec in self.protocol.test_sets.items():
            spec.path = resolve_data_path(spec.path, base)
        if test_data_path:
            self._override_test_path(test_data_path)
        self.run_dir = Path(run_dir)
        self.registry = registry or get_registry()
        self.log = log
        self.only = only
        self.scheme = load_scheme(self.protocol.class_scheme)
        #: this process's place in a torchrun launch (rank 0 of 1 without one): only rank 0 writes
        self.launch = distributed.current()
        #: whether a stop may be recorded in the run directory (decided by its claim, in run)
        self._may_record = False
        #: the last external fold's fitted model, for the method's other external splits
        self._shared_fit: _SharedFit | None = None

    def _override_test_path(self, given: str) -> None:
        """``--test-data PATH`` (the one unnamed set) or ``--test-data NAME=PATH`` (a named set);
        relative to the working directory."""
        sets = self.protocol.test_sets
        if not sets:
            raise ProtocolError("--test-data given but the protocol has no 'test_data' section")
        if UNNAMED_TEST_SET in sets:
            sets[UNNAMED_TEST_SET].path = resolve_data_path(given, Path.cwd())
            return
        name, sep, path = given.partition("=")
        if not sep or name not in sets:
            raise ProtocolError(f"--test-data {given}: the protocol names its test sets ({', '.join(sets)}): give "
                                "--test-data NAME=PATH")
        sets[name].path = resolve_data_path(path, Path.cwd())

    # ------------------------------------------------------------------ public
    def run(self) -> RunResult:
        """Check everything, then run every fold not yet done, evaluate and report.

        1. the protocol against the registry (the one check; nothing on disk is touched);
        2. the run directory locked for the whole run (a second process gets the lock error);
        3. every other check, in memory: how the directory may be used, the feature cache, the
           data and its labels, the split plan against the stored one;
        4. only then the writes: protocol, plugins, data set and split files, ``run.json``, folds,
           metrics and reports.

        A failure or Ctrl-C after 2. is recorded in ``run.json`` (``failed`` / ``interrupted``, with
        the cause; an unexpected error's traceback in ``error.log``) unless that would touch a run
        with results whose resume was refused; the exception is re-raised.
        """
        methods, skipped = self._methods_to_run()
        rd = RunDir(self.run_dir)
        if not self.launch.is_main:  # torchrun rank > 0: rank 0 locks and writes the directory
            return self._run_as_follower(rd, methods, skipped)
        lock = self._lock(rd)
        self._may_record = False  # may a stop be recorded in the directory? (decided by the claim)
        try:
            return self._run_locked(rd, methods, skipped)
        except BaseException as exc:
            self._record_stop(rd, exc)
            raise
        finally:
            lock.release()

    def _run_locked(self, rd: RunDir, methods: dict[str, MethodSpec], skipped: list[str]) -> RunResult:
        t0 = time.perf_counter()
        # -- every check, in memory: nothing in the directory is written before they all pass
        claim = rd.claim(self.protocol.digest(), self._changed_keys)
        self._may_record = not claim.resume  # a directory without results loses nothing by it
        cache = self._cache() if any(m.features is not None for m in methods.values()) else None
        data = self._load_data(rd)
        self._check_labels(data)
        plan = self._split_plan(data)
        if claim.resume:
            self._check_same_plan(rd, plan)
        dropped = {e.label for e in plan.excluded if e.policy == "drop"}
        labels = ordered_labels(set(data.train.labels.tolist()) - dropped, self.scheme)
        # -- every check passed: write
        self._may_record = True
        self._start(rd, claim, data, plan)
        self._write_run_info(rd, data.train, labels, methods, status="running")
        done, resumed = self._run_methods(rd, methods, plan, data, cache)
        self.log(f"all folds finished in {time.perf_counter() - t0:.1f} s; evaluating")
        # every fold is done: record it before the reports, so that index.html says so
        self._write_run_info(rd, data.train, labels, methods, status="finished")
        outputs = self._evaluate_and_report(rd)
        self.log(f"run directory: {self.run_dir}")
        return RunResult(self.run_dir, list(methods), skipped, done, resumed, outputs)

    def _run_as_follower(self, rd: RunDir, methods: dict[str, MethodSpec], skipped: list[str]) -> RunResult:
        """A torchrun rank other than 0: the same data, checks, split plan and folds, in the same
        order, as rank 0, which holds the lock and writes every file. This rank takes no lock,
        writes nothing (its stops are recorded by rank 0, or reported by torchrun) and only takes
        its share of each fold's training (the classifier's DistributedDataParallel); it reads the
        directory to skip the folds rank 0 finished before, as rank 0 does."""
        data = self._load_data(rd)
        self._check_labels(data)
        plan = self._split_plan(data)
        done, resumed = self._run_methods(rd, methods, plan, data)
        return RunResult(self.run_dir, list(methods), skipped, done, resumed)

    # ------------------------------------------------------------------ steps
    def _methods_to_run(self) -> tuple[dict[str, MethodSpec], list[str]]:
        """(methods to run, optional methods skipped): the protocol checked against the registry."""
        skipped = check_against_registry(self.protocol, self.registry, self.origin)
        for name in skipped:
            self.log(f"[skip] method {name!r}: its plugin is not installed (optional method)")
        methods = {k: v for k, v in self.protocol.methods.items() if k not in skipped}
        if self.only:
            unknown = [m for m in self.only if m not in self.protocol.methods]
            if unknown:
                raise ProtocolError(f"--only: unknown method(s) {unknown}; protocol has {list(self.protocol.methods)}")
            methods = {k: v for k, v in methods.items() if k in self.only}
        if self.launch.distributed:
            self._check_distributed(methods)
        return methods, skipped

    def _check_distributed(self, methods: dict[str, MethodSpec]) -> None:
        """Under a multi-process torchrun launch, every method must train across the ranks."""
        from cytocompare.base import get_tags

        facts = {name: (m.features is not None or m.selector is not None,
                        get_tags(self.registry.get("classifier", m.classifier.name).load()).distributed)
                 for name, m in methods.items()}
        refused = distributed.methods_not_distributed(facts)
        if refused:
            raise ProtocolError(distributed.refusal(self.launch, refused, [n for n in facts if n not in refused]))

    def _lock(self, rd: RunDir) -> DirectoryLock:
        """The run directory's lock, taken (creating the folder) before anything is read in it."""
        lock = DirectoryLock(rd.path, what="run directory")
        try:
            return lock.acquire()
        except OSError as exc:
            raise OutputError(f"cannot write the run directory {exc.filename or rd.path}: "
                              f"{exc.strerror or exc}; choose a folder you can write with --output") from None

    def _changed_keys(self, stored: dict[str, Any] | None) -> list[str]:
        """The result-relevant keys in which the stored protocol.yaml differs from this protocol."""
        from cytocompare.config import protocol_changes

        return list(protocol_changes(stored, self.protocol))

    def _start(self, rd: RunDir, claim: Claim, data: RunData, plan: SplitPlan) -> None:
        """The writes of a run's start, once every check has passed."""
        if claim.resume:
            self.log(f"resuming the run in {self.run_dir}" + (f" ({claim.why})" if claim.why else ""))
        elif claim.mode == "restart":
            self.log(f"starting afresh in {self.run_dir}: {claim.why}")
            rd.clear_early_files()
        rd.write_protocol(self.protocol.model_dump(mode="json"))
        rd.write_plugins(self._plugins_info())
        for prefix, loaded in data.loaded.items():
            rd.write_dataset(loaded, prefix)
        for name, matching in data.matchings.items():
            rd.write_test_matching(matching.to_dict(), prefix=test_file_prefix(name))
        rd.write_split_plan(plan, data.train.paths, data.train.labels)
        if plan.near_duplicates is not None:
            rd.write_near_duplicates(*plan.near_duplicate_table())
            for name, test in data.tests.items():
                rd.write_near_duplicates(*plan.external_near_duplicate_table(data.train.paths, test.paths, name),
                                         prefix=test_file_prefix(name))

    def _record_stop(self, rd: RunDir, exc: BaseException) -> None:
        """run.json says why the run stopped (and error.log holds an unexpected error's traceback);
        the exception learns where that traceback is (``exc.traceback_file``)."""
        if isinstance(exc, KeyboardInterrupt):
            status, error = "interrupted", {"type": "KeyboardInterrupt",
                                            "message": "interrupted; rerunning the same command resumes"}
        elif isinstance(exc, Exception):
            status, error = "failed", {"type": type(exc).__name__, "message": describe_error(exc)}
        else:  # SystemExit, GeneratorExit: not a failure of the run
            return
        error["traceback"] = None
        if is_unexpected(exc):
            text = "".join(traceback.format_exception(exc))
            path = None
            if self._may_record:
                try:
                    path = rd.write_error_log(text)
                except OSError:
                    path = None
            if path is None:
                path = write_traceback_elsewhere(text)
            error["traceback"] = None if path is None else str(path)
            try:
                exc.traceback_file = None if path is None else str(path)  # type: ignore[attr-defined]
            except AttributeError:  # pragma: no cover - an exception type with __slots__
                pass
        if not self._may_record:
            return
        try:
            rd.record_stop(status, error, protocol_name=self.protocol.name, protocol_hash=self.protocol.digest())  # type: ignore[arg-type]
        except OSError as write_error:
            self.log(f"(could not record the {status} run in {self.run_dir / 'run.json'}: {write_error})")

    def _plugins_info(self) -> dict[str, Any]:
        dists = plugin_distributions(get_plugin_manager())
        components: dict[str, list[dict[str, str]]] = {}
        for spec in self.registry:
            components.setdefault(spec.plugin, []).append({"kind": spec.kind, "name": spec.name, "factory": spec.factory_path})
        return {
            "plugins": [
                {"name": name, "distribution": d, "version": v, "components": components.get(name, [])}
                for name, (d, v) in sorted(dists.items())
            ],
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        }

    def _uses_external(self, method: MethodSpec) -> bool:
        return bool(self._test_sets_of(method))

    def _test_sets_of(self, method: MethodSpec) -> list[str]:
        """The test sets a method's external splits test on, in protocol order."""
        used = {self.protocol.test_set_of(s) for s in method.splits if self.protocol.splits[s].kind == "external"}
        return [n for n in self.protocol.test_sets if n in used]

    def _load_data(self, rd: RunDir) -> RunData:
        """Every data set, read and checked; nothing is written (see :meth:`_start`). A test set
        no method tests on is not read."""
        loaded = {"": self._load_set(rd, self.protocol.data, "training", prefix="")}
        train, tests, matchings = loaded[""].images, {}, {}
        used = {n for m in self.protocol.methods.values() for n in self._test_sets_of(m)}
        for name, spec in self.protocol.test_sets.items():
            if name not in used:
                continue
            prefix = test_file_prefix(name)
            loaded[prefix] = self._load_set(rd, spec, f"test set {name!r}" if name else "test", prefix=prefix)
            tests[name] = loaded[prefix].images
            # scale (measured or fixed) and colour map of the test set, set on its ImageSet
            matchings[name] = match_test_set(train, tests[name], spec, seed=self.protocol.seed, log=self.log)
        return RunData(train, tests, loaded, matchings)

    def _load_set(self, rd: RunDir, spec: Any, what: str, prefix: str) -> Any:
        self.log(f"[data] reading {what} set {spec.path}")
        try:
            loaded = self._read_set(spec, spec.on_bad_file)
        except DataError as exc:
            raise self._stopped_on_bad_files(rd, exc, spec, prefix) from None
        for w in loaded.warnings:
            self.log(f"[data]   warning: {w}")
        if loaded.skipped:
            self.log(f"[data]   {len(loaded.skipped)} file(s) not used (bad, unmapped or excluded); "
                     f"each is listed with its cause in {prefix}skipped.csv")
        self.log(f"[data]   {len(loaded.images)} images, classes: "
                 + ", ".join(f"{c} {n}" for c, n in sorted(loaded.class_counts.items()))
                 + (f"; {loaded.n_unmapped} kept unmapped (predicted, not scored)" if loaded.n_unmapped else ""))
        return loaded

    def _read_set(self, spec: Any, on_bad_file: str) -> Any:
        from cytocompare.datasets import load_dataset

        return load_dataset(
            spec.path, layout=spec.layout, classes=spec.classes, label_map=spec.label_map,
            label_from=spec.label_from, image_size=spec.image_size, resize=spec.resize, crop=spec.center_crop,
            scale=spec.fixed_scale, unmapped=spec.unmapped,
            on_bad_file=on_bad_file, n_jobs=self.protocol.n_jobs, allow_outside_paths=spec.allow_outside_paths,
            perceptual_hashes=self.protocol.near_duplicates.threshold is not None,
            progress=throttled_progress(self.log, 2, lambda done, total: f"[data]   checked {done}/{total} files",
                                        "[data] checking files", "files"),
        )

    def _stopped_on_bad_files(self, rd: RunDir, exc: DataError, spec: Any, prefix: str) -> DataError:
        """Stop mode (``on_bad_file: stop``, :class:`cytocompare.datasets.BadFilesError`) names a
        few bad files: write every file left out to ``<prefix>skipped.csv`` where that loses nothing
        (a directory without results), else name every bad file in the message and leave the run
        as it was. Any other DataError is returned as it is."""
        skipped = getattr(exc, "skipped", None)
        if not skipped:
            return exc
        if self._may_record:
            try:
                path = rd.write_skipped(skipped, prefix)
            except OSError:
                path = None
            if path is not None:
                return DataError(f"{exc}\nall {len(skipped)} file(s) left out are listed with their cause in {path}")
        bad = getattr(exc, "bad", None) or skipped
        listed = "\n".join(f"  {f.path}: {f.cause}" for f in bad)
        return DataError(
            f"{len(bad)} bad image file(s) in {spec.path} (on_bad_file: stop):\n{listed}\n"
            f"fix or remove them, or set on_bad_file: skip to leave them out; the run in {self.run_dir} "
            "was left as it was")

    def _check_labels(self, data: RunData) -> None:
        """Every label a data set was loaded with is a code of the class scheme (issue 8.2)."""
        from cytocompare.classes import check_labels

        keys = {test_file_prefix(n): ("test_data" if n == UNNAMED_TEST_SET else f"test_data.{n}")
                for n in self.protocol.test_sets}
        for prefix, loaded in data.loaded.items():
            check_labels(loaded.class_counts, self.scheme, f"{self.origin}: {keys.get(prefix, 'data')}")

    def _split_plan(self, data: RunData) -> SplitPlan:
        """The split plan, computed in memory (written by :meth:`_start`)."""
        from cytocompare.splits import make_plan

        from cytocompare.splits import ExternalSet

        train = data.train
        external = {name: ExternalSet(test.labels, test.sha256, data.loaded[test_file_prefix(name)].perceptual_hashes,
                                      test.paths) for name, test in data.tests.items()}
        plan = make_plan(
            train.labels, train.sha256, self.protocol.splits, seed=self.protocol.seed,
            small_classes=self.protocol.small_classes, paths=train.paths,
            near_duplicate_hashes=data.loaded[""].perceptual_hashes,
            near_duplicate_threshold=self.protocol.near_duplicates.threshold,
            external_sets=external,
            n_jobs=self.protocol.n_jobs,
        )
        if plan.near_duplicates is not None:
            self.log(f"[splits] near-duplicates (threshold {self.protocol.near_duplicates.threshold}): "
                     f"{plan.near_duplicates.summary()}")
        for excluded in plan.excluded:
            self.log(f"[splits] {excluded.describe()}")
        for warning in plan.warnings:
            self.log(f"[splits] warning: {warning}")
        self.log(f"[splits] plan {plan.hash[:12]}: " + ", ".join(
            f"{n} ({len(plan.folds(n))} fold{'s' if len(plan.folds(n)) > 1 else ''})" for n in plan.split_names))
        return plan

    def _check_same_plan(self, rd: RunDir, plan: SplitPlan) -> None:
        """A resumed run must see the very same images and assignments."""
        if not rd.has_split_plan():
            return
        previous = rd.read_split_plan()
        if previous.hash != plan.hash:
            raise CytocompareError(
                f"the data changed since this run started: split plan {previous.hash[:12]} in "
                f"{self.run_dir / 'splits.json'}, now {plan.hash[:12]}; nothing in {self.run_dir} was changed; "
                "use a new --output directory so that no finished work is lost"
            )

    def _run_methods(self, rd: RunDir, methods: dict[str, MethodSpec], plan: SplitPlan,
                     data: RunData, cache: Any = None) -> tuple[int, int]:
        """Run every fold not yet done; (folds run, folds resumed). On a dask backend
        (:mod:`cytocompare.compute`, the protocol's ``compute``) features are extracted and folds
        fitted on the cluster, each fold written here as it comes back, in any order; a
        checkpointing classifier's folds (the CNNs: their checkpoints live in the run directory)
        are fitted here."""
        from cytocompare.compute import open_backend

        tally = {"done": 0, "resumed": 0}
        with open_backend(self.protocol.compute, self.protocol.n_jobs, self.log) as backend, backend.pool() as pool:
            self._run_folds(rd, methods, plan, data, cache, backend, pool, tally)
        return tally["done"], tally["resumed"]

    def _run_folds(self, rd: RunDir, methods: dict[str, MethodSpec], plan: SplitPlan, data: RunData, cache: Any,
                   backend: Any, pool: Any, tally: dict[str, int]) -> None:
        """Every fold not yet done, run here or handed to ``pool`` (a dask backend's); ``tally``
        counts the folds done and resumed."""
        counter = _progress.folds(self.log, sum(len(plan.folds(s)) for m in methods.values() for s in m.splits))

        def finished() -> None:
            tally["done"] += 1
            counter.done()

        for mname, method in methods.items():
            self._shared_fit = None  # the last method's model is not held while this one trains
            pipeline = build_method(method, self.registry, self.protocol.seed, self.protocol.n_jobs)
            features: dict[str, np.ndarray] = {}
            failures: dict[str, Any] = {}  # image set -> FeatureFailures (cytocompare.feature_failures)
            for split in method.splits:
                folds = plan.folds(split)
                for k, fold in enumerate(folds):
                    task = FoldTask(mname, method, split, k, fold, f"[{mname} | {split} | fold {k + 1}/{len(folds)}]",
                                    plan.test_set_of(split))
                    if rd.has_predictions(mname, split, k):
                        tally["resumed"] += 1
                        self.log(f"{task.tag} already done, resumed")
                        counter.done(resumed=True)
                        continue
                    counter.start(task.tag)
                    if pipeline.features is not None and not features:
                        features, failures = self._features(cache or self._cache(), rd, pipeline, data, mname,
                                                            method, task.tag, backend)
                    if failures:
                        task = self._without_failed_cells(task, failures)
                    if pool is not None and not isinstance(pipeline.classifier, Checkpointing):
                        self._submit_fold(pool, rd, task, pipeline, data, features, finished)
                        continue
                    self._run_fold(rd, task, pipeline, data, features)
                    finished()

    def _cache(self) -> Any:
        """The feature cache, its folder checked writable (before any work)."""
        from cytocompare.feature_cache import FeatureCache

        root = default_cache_dir(self.protocol)
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=root)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise OutputError(
                f"cannot write the feature cache {exc.filename or root}: {exc.strerror or exc}; set cache_dir in "
                "the protocol or $CYTOCOMPARE_CACHE to a folder you can write") from None
        self.log(f"[features] cache {root}")
        return FeatureCache(root)

    def _features(self, cache: Any, rd: RunDir, pipeline: Pipeline, data: RunData, mname: str,
                  method: MethodSpec, tag: str, backend: Any = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """A method's features of every image it will see: the training set, and the external
        test set when one of its splits is external (computed once, cached by content); and the
        cells whose features failed, per image set, with the method's ``on_feature_failure``
        applied (recorded in ``feature_failures.csv``; ``stop`` raises after recording them)."""
        from cytocompare.feature_failures import (
            FeatureFailureError,
            apply_feature_failures,
            record_feature_failures,
        )

        extractor = clone(pipeline.features).fit(data.train)
        sets = {"train": data.train} | {test_set_key(n): data.tests[n] for n in self._test_sets_of(method)}
        out = {}
        for name, images in sets.items():
            t = time.perf_counter()
            progress = throttled_progress(self.log, 5, lambda done, total, name=name:
                                          f"{tag} features ({name}): {done}/{total} images",
                                          f"{tag} features ({name})")
            out[name] = cache.compute(extractor, images, n_jobs=self.protocol.n_jobs, progress=progress,
                                      backend=backend)
            self.log(f"{tag} features ({name}): {out[name].shape[1]} per image, {time.perf_counter() - t:.1f} s")
        for name in self._test_sets_of(method):
            if self.protocol.test_sets[name].feature_alignment == "none":
                continue
            from cytocompare.feature_alignment import align_to_training

            key = test_set_key(name)
            out[key] = align_to_training(out[key], out["train"])
            self.log(f"{tag} features ({key}): each feature's mean and sd over the {len(out[key])} test images "
                     f"aligned to the training set's (test_data.feature_alignment: standardize)")
        failures: dict[str, Any] = {}
        for name, images in sets.items():
            try:
                failures[name] = apply_feature_failures(extractor, out[name], images, method.on_feature_failure,
                                                        mname, set_name=name)
            except FeatureFailureError as exc:
                record_feature_failures(rd, mname, [*failures.values(), exc.failures])
                self.log(f"{tag} {exc.failures.describe()}")
                raise
            self.log(f"{tag} {failures[name].describe()}")
        record_feature_failures(rd, mname, list(failures.values()))
        return out, failures

    @staticmethod
    def _without_failed_cells(task: FoldTask, failures: dict[str, Any]) -> FoldTask:
        """The fold without the cells its method skips (``on_feature_failure: skip``)."""
        from cytocompare.feature_failures import filter_fold

        fold = filter_fold(task.fold, failures, test_key=task.test_key)
        if fold is task.fold:
            return task
        return FoldTask(task.method_name, task.method, task.split, task.k, fold, task.tag, task.test_set)

    def _run_fold(self, rd: RunDir, task: FoldTask, pipeline: Pipeline, data: RunData,
                  features: dict[str, np.ndarray]) -> None:
        """Fit on the fold's training part, predict its test part, write both, tidy up. The
        external splits of a method share one fit: trained on the same development images, the
        model fitted for the first predicts every other external test set (:class:`_SharedFit`)."""
        test_set = data.test_set(task)
        shared = self._shared_fit
        if shared is not None and shared.serves(task):
            if self.launch.is_main:
                self.log(f"{task.tag} the model fitted for split {shared.split!r} on the same "
                         f"{len(task.fold.train)} images predicts this test set (one fit for every external set)")
                _, _, test = self._fold_inputs(task, shared.model, data, features)
                fitted = predict_fold(shared.model, test)
                fitted.fitted_for = shared.split
                self._finish_fold(rd, task, fitted, test_set, None)
            return
        model = clone(pipeline)
        ckpt_dir = self._give_checkpoint_dir(rd, model, task)
        if not self.launch.is_main:  # a follower trains its shard; rank 0 predicts and writes the fold
            model.fit(data.train.subset(task.fold.train), data.train.labels[task.fold.train])
            self._shared_fit = _SharedFit.of(task, model) or self._shared_fit
            return
        self._log_fit(task, model, ckpt_dir)
        fitted = fit_fold(model, *self._fold_inputs(task, model, data, features, test_rows_later=True))
        self._shared_fit = _SharedFit.of(task, fitted.model) or self._shared_fit
        self._finish_fold(rd, task, fitted, test_set, ckpt_dir)

    def _submit_fold(self, pool: Any, rd: RunDir, task: FoldTask, pipeline: Pipeline, data: RunData,
                     features: dict[str, np.ndarray], finished: Callable[[], None]) -> None:
        """The fold's fit handed to the cluster (:class:`cytocompare.compute.TaskPool`) with its
        training and test data; written here when it comes back."""
        test_set = data.test_set(task)
        model = clone(pipeline)
        self._log_fit(task, model, None)

        def on_done(fitted: FittedFold) -> None:
            self._finish_fold(rd, task, fitted, test_set, None)
            finished()

        pool.submit(fit_fold, (model, *self._fold_inputs(task, model, data, features)), on_done)

    def _log_fit(self, task: FoldTask, model: Pipeline, ckpt_dir: Path | None) -> None:
        self.log(f"{task.tag} fit on {len(task.fold.train)} images"
                 + (f" (checkpoints in {ckpt_dir})" if ckpt_dir else ""))
        _progress.detail(self.log, f"{task.tag} test on {len(task.fold.test)} {'external' if task.external else 'held-out'} images; "
                                   f"method {model!r}")

    @staticmethod
    def _fold_inputs(task: FoldTask, model: Pipeline, data: RunData, features: dict[str, np.ndarray],
                     test_rows_later: bool = False) -> tuple[Any, np.ndarray, Any]:
        """(training inputs, training labels, test inputs) of a fold: rows of the precomputed
        features for a method with an extractor, else the images. ``test_rows_later``: the test
        rows are gathered only after the fit (:class:`_Rows`), so that they and the training rows
        are not both held during it."""
        fold, test_set = task.fold, data.test_set(task)
        y_train = data.train.labels[fold.train]
        if model.features is not None:
            test = _Rows(features[task.test_key], fold.test)
            return np.asarray(features["train"][fold.train]), y_train, test if test_rows_later else np.asarray(test)
        return data.train.subset(fold.train), y_train, test_set.subset(fold.test)

    def _finish_fold(self, rd: RunDir, task: FoldTask, fitted: FittedFold, test_set: ImageSet,
                     ckpt_dir: Path | None) -> None:
        """A fitted fold's log line, its files, its artifacts, its checkpoint folder removed."""
        y_test = test_set.labels[task.fold.test]
        scored = y_test != UNMAPPED  # an external image kept unmapped has no true class
        acc = float(np.mean(fitted.prediction[scored] == y_test[scored])) if scored.any() else float("nan")
        self.log(f"{task.tag} fit {fitted.fit_seconds:.1f} s, predict {len(task.fold.test)} images "
                 f"{fitted.predict_seconds:.1f} s, accuracy {acc:.3f}")
        self._write_fold(rd, task, fitted, test_set)
        if task.method.artifacts and task.k == 0 and fitted.model.features is None:
            self._write_artifacts(rd, task, fitted.model, test_set)
        if ckpt_dir is not None and not task.method.keep_checkpoints:
            # the fold's predictions are on disk: the checkpoint has done its job (ResNeXt-50: ~200 MB a fold)
            shutil.rmtree(ckpt_dir, ignore_errors=True)

    def _write_fold(self, rd: RunDir, task: FoldTask, fitted: FittedFold, test_set: ImageSet) -> None:
        """The fold's predictions and what was fitted (the fold JSON, written last)."""
        model, fold = fitted.model, task.fold
        report = model.classifier_.fit_report() if isinstance(model.classifier_, ReportsFit) else {}
        info = {
            "fit_seconds": fitted.fit_seconds,
            "predict_seconds": fitted.predict_seconds,
            **({} if fitted.fitted_for is None else {"fitted_for": fitted.fitted_for}),
            "n_train": int(len(fold.train)),
            "n_test": int(len(fold.test)),
            "test_source": fold.test_source,
            "components": {
                "features": repr(model.features_) if getattr(model, "features_", None) is not None else repr(model.features),
                "selector": repr(model.selector_) if getattr(model, "selector_", None) is not None else None,
                "classifier": repr(model.classifier_),
            },
            # what the classifier's fit chose (ReportsFit); variant and best_params also on their own
            "fit_report": report,
            "variant": report.get("variant"),
            "best_params": report.get("best_params"),
            "selected_features": _selected_names(model),
            "finished": utc_now(),
        }
        rd.write_predictions(
            task.method_name, task.split, task.k, images=fold.test, paths=test_set.paths[fold.test],
            truth=test_set.labels[fold.test], prediction=fitted.prediction, scores=fitted.scores,
            classes=[str(c) for c in model.classes_], info=info,
        )

    def _write_artifacts(self, rd: RunDir, task: FoldTask, model: Pipeline, test_set: ImageSet) -> None:
        """Extra files of a classifier that writes them (WritesArtifacts), for the first fold."""
        if not isinstance(model.classifier_, WritesArtifacts):
            return
        out = rd.artifacts_dir(task.method_name, task.split)
        # the figures explain calls against a true class: external images kept unmapped have none
        shown = task.fold.test[test_set.labels[task.fold.test] != UNMAPPED]
        try:
            model.classifier_.write_artifacts(out, test_set.subset(shown), test_set.labels[shown])
            self.log(f"{task.tag} artifacts written to {out}")
        except ImportError as exc:
            self.log(f"{task.tag} artifacts skipped: {exc}")

    def _give_checkpoint_dir(self, rd: RunDir, model: Pipeline, task: FoldTask) -> Path | None:
        """A checkpointing classifier (Checkpointing) whose ``checkpoint_dir`` the protocol left at
        None trains into a folder of the run directory, so that an interrupted run resumes inside
        the fold, not only at its start."""
        if not isinstance(model.classifier, Checkpointing) or model.classifier.checkpoint_dir is not None:
            return None
        path = rd.checkpoint_dir(task.method_name, task.split, task.k)
        model.classifier.set_params(checkpoint_dir=str(path))
        return path

    def _evaluate_and_report(self, rd: RunDir) -> list[Path]:
        from cytocompare.evaluation import evaluate_and_report

        return evaluate_and_report(rd, self.protocol.evaluation.evaluators, self.protocol.reports,
                                   self.registry, self.log)

    def _write_run_info(self, rd: RunDir, train: ImageSet, labels: list[str], methods: dict[str, MethodSpec],
                        status: str) -> None:
        counts = {c: int(n) for c, n in zip(*np.unique(train.labels, return_counts=True))}
        pairs = self.protocol.tolerance.pairs
        no_call = self.protocol.evaluation.no_call_classes
        rd.write_run_info(RunInfo(
            status=status,  # type: ignore[arg-type]
            protocol_name=self.protocol.name,
            protocol_hash=self.protocol.digest(),
            labels=labels,
            class_names={c: self.scheme.get(c).name for c in labels if c in self.scheme.codes},
            class_counts={c: counts.get(c, 0) for c in labels},
            tolerated_pairs=[sorted(p) for p in self._tolerated_pairs()],
            tolerance_source=pairs if pairs in ("scheme", "none") else "protocol",  # type: ignore[arg-type]
            no_call_classes=sorted(no_call if no_call is not None else self.scheme.no_call_classes),
            methods={m: {"splits": spec.splits, "components": {
                p: (getattr(spec, p).model_dump() if getattr(spec, p) is not None else None)
                for p in ("features", "selector", "classifier")}} for m, spec in methods.items()},
            splits={n: s.model_dump() | {"n_folds": s.n_splits if s.kind == "kfold" else 1}
                    for n, s in self.protocol.splits.items()},
            evaluators=self.protocol.evaluation.evaluators,
            reporters=self.protocol.reports,
            data=str(self.protocol.data.path),
            test_data=(None if self.protocol.test_data is None else str(self.protocol.test_data.path)
                       if UNNAMED_TEST_SET in self.protocol.test_sets
                       else {n: str(spec.path) for n, spec in self.protocol.test_sets.items()}),
            versions={"cytocompare": __version__, "python": sys.version.split()[0]},
        ))

    def _tolerated_pairs(self) -> list[tuple[str, str]]:
        """The tolerated pairs, each sorted, in sorted order (the scheme's are a set)."""
        spec = self.protocol.tolerance.pairs
        if spec == "none":
            return []
        pairs = self.scheme.tolerated_pairs if spec == "scheme" else spec
        return sorted({tuple(sorted(p)) for p in pairs})  # type: ignore[misc]


@dataclass(frozen=True)
class _SharedFit:
    """A model fitted for an external split: the same method's other external splits train on
    the very same development images (all of them, less the classes a policy dropped), so this
    one fit predicts their test sets too. Held for one method at a time."""

    method: str
    split: str
    train: bytes  # the training indices, as bytes: another fold must match them exactly
    model: Pipeline

    @classmethod
    def of(cls, task: FoldTask, model: Pipeline) -> _SharedFit | None:
        if not task.external:
            return None
        return cls(task.method_name, task.split, np.asarray(task.fold.train, dtype="<i8").tobytes(), model)

    def serves(self, task: FoldTask) -> bool:
        return (task.external and task.method_name == self.method
                and np.asarray(task.fold.train, dtype="<i8").tobytes() == self.train)


@dataclass(frozen=True)
class _Rows:
    """Rows of a feature matrix (a memmap of the feature cache), gathered by ``np.asarray``."""

    matrix: np.ndarray
    rows: np.ndarray

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.matrix[self.rows], dtype=dtype)


def fit_fold(model: Pipeline, train: Any, y_train: np.ndarray, test: Any) -> FittedFold:
    """``model`` (unfitted) fitted on a fold's training part and its predictions on the test
    part: feature rows (``fit_features``) for a method with an extractor, else images. Runs in
    the run's process or on a dask worker (:mod:`cytocompare.compute`); touches no file."""
    t = time.perf_counter()
    if model.features is not None:
        model.fit_features(train, y_train)
    else:
        model.fit(train, y_train)
    fit_s = time.perf_counter() - t
    return predict_fold(model, test, fit_s)


def predict_fold(model: Pipeline, test: Any, fit_seconds: float = 0.0) -> FittedFold:
    """A fitted ``model``'s predictions on a fold's test part (feature rows or images)."""
    t = time.perf_counter()
    if model.features is not None:
        test = np.asarray(test)
        pred, scores = model.predict_features(test), model.predict_proba_features(test)
    else:
        pred = model.predict(test)
        scores = model.predict_proba(test) if hasattr(model.classifier_, "predict_proba") else None
    return FittedFold(model, pred, scores, fit_seconds, time.perf_counter() - t)


def _selected_names(model: Pipeline) -> list[str] | None:
    selector = getattr(model, "selector_", None)
    if selector is None or not hasattr(selector, "get_support"):
        return None
    names = model.features.get_feature_names_out() if model.features is not None else None
    idx = selector.get_support(indices=True)
    if names is None:
        return [int(i) for i in idx]
    return [names[int(i)] for i in idx]


def is_unexpected(exc: BaseException) -> bool:
    """An error the user cannot act on from its message alone: not one of cytocompare's own,
    nor an OSError naming its file (permissions, a full disk), nor Ctrl-C."""
    if isinstance(exc, (CytocompareError, KeyboardInterrupt)):
        return False
    if isinstance(exc, OSError) and exc.filename is not None:
        return False
    return isinstance(exc, Exception)


def describe_error(exc: BaseException) -> str:
    """One line (or cytocompare's own message) saying what went wrong, for run.json and the CLI."""
    if isinstance(exc, CytocompareError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        target = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
        return f"{target}: {exc.strerror or exc}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def write_traceback_elsewhere(text: str) -> Path | None:
    """A temporary file holding a traceback, when the run directory cannot take it."""
    try:
        fd, path = tempfile.mkstemp(prefix="cytocompare-error-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return Path(path)
    except OSError:
        return None
