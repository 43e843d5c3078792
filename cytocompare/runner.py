"""The runner: one split plan, applied identically to every method; resumable; all output in files.

A run directory is filled fold by fold. Each fold's predictions are written the moment they
exist (atomically), so an interrupted run loses at most the fold in progress, and running the
same protocol into the same directory again resumes at the first unfinished fold.

The runner knows components only through :mod:`cytocompare.protocols`: the component protocols,
the optional capabilities (:class:`~cytocompare.protocols.Checkpointing`,
:class:`~cytocompare.protocols.WritesArtifacts`, :class:`~cytocompare.protocols.ReportsFit`) and
the injection rule of :func:`protocol_defaults`. Every file it writes goes through
:class:`~cytocompare.rundir.RunDir`.
"""

from __future__ import annotations

import inspect
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cytocompare import __version__
from cytocompare.base import clone
from cytocompare.classes import ClassScheme, load_scheme
from cytocompare.config import ComponentRef, MethodSpec, Protocol, check_against_registry
from cytocompare.datasets import resolve_data_path
from cytocompare.errors import CytocompareError, ProtocolError
from cytocompare.images import ImageSet
from cytocompare.pipeline import Pipeline
from cytocompare.plugins import get_plugin_manager, get_registry, plugin_distributions
from cytocompare.protocols import Checkpointing, ReportsFit, WritesArtifacts
from cytocompare.registry import Kind, Registry
from cytocompare.rundir import RunDir, RunInfo, utc_now
from cytocompare.splits import Fold, SplitPlan

Log = Callable[[str], None]
ProgressCallback = Callable[[int, int], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def throttled_progress(log: Log, every_s: float, line: Callable[[int, int], str]) -> ProgressCallback:
    """A ``progress(done, total)`` callback that logs ``line(done, total)`` at most every
    ``every_s`` seconds, and always at the end."""
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


def protocol_defaults(kind: Kind, params: dict[str, Any], factory: Any, *, seed: int,
                      n_jobs: int) -> dict[str, Any]:
    """The injection rule: a component whose constructor takes ``random_state`` gets the
    protocol's ``seed``, and one that takes ``n_jobs`` the protocol's ``n_jobs``, unless the
    protocol sets them for it.

    A feature extractor keeps its own ``n_jobs``: the runner already spreads feature extraction
    over the protocol's ``n_jobs`` through the feature cache (processes inside processes would
    only compete for the same cores), and its parameters key the cache.
    """
    target = factory.__init__ if inspect.isclass(factory) else factory
    takes = inspect.signature(target).parameters
    injected = {"random_state": seed, "n_jobs": n_jobs}
    if kind == "feature_extractor":
        del injected["n_jobs"]
    return {k: v for k, v in injected.items() if k in takes and k not in params} | dict(params)


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

    @property
    def external(self) -> bool:
        return self.fold.test_source == "external"


@dataclass(frozen=True)
class RunData:
    """The images of a run and, per method with a feature extractor, their features."""

    train: ImageSet
    test: ImageSet | None  # the external test set, when a method needs it

    def test_set(self, task: FoldTask) -> ImageSet:
        """The images a fold is tested on (its test indices point into this set)."""
        images = self.test if task.external else self.train
        if images is None:
            raise CytocompareError(f"{task.tag}: external split but no test data was loaded")
        return images


@dataclass
class FittedFold:
    """A fitted model, its predictions on the fold's test images, and the times taken."""

    model: Pipeline
    prediction: np.ndarray
    scores: np.ndarray | None
    fit_seconds: float
    predict_seconds: float


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
        if self.protocol.test_data is not None:
            self.protocol.test_data.path = test_data_path or resolve_data_path(self.protocol.test_data.path, base)
        elif test_data_path:
            raise ProtocolError("--test-data given but the protocol has no 'test_data' section")
        self.run_dir = Path(run_dir)
        self.registry = registry or get_registry()
        self.log = log
        self.only = only
        self.scheme = load_scheme(self.protocol.class_scheme)

    # ------------------------------------------------------------------ public
    def run(self) -> RunResult:
        """Check the protocol against the registry (the one check), then run every fold not yet
        done, evaluate and report."""
        methods, skipped = self._methods_to_run()
        rd = RunDir(self.run_dir)
        self._prepare_dir(rd)
        t0 = time.perf_counter()
        data = self._load_data(rd)
        plan = self._split_plan(rd, data)
        dropped = {e.label for e in plan.excluded if e.policy == "drop"}
        labels = ordered_labels(set(data.train.labels.tolist()) - dropped, self.scheme)
        self._write_run_info(rd, data.train, labels, methods, status="running")
        done, resumed = self._run_methods(rd, methods, plan, data)
        self.log(f"all folds finished in {time.perf_counter() - t0:.1f} s; evaluating")
        # every fold is done: record it before the reports, so that index.html says so
        self._write_run_info(rd, data.train, labels, methods, status="finished")
        outputs = self._evaluate_and_report(rd)
        self.log(f"run directory: {self.run_dir}")
        return RunResult(self.run_dir, list(methods), skipped, done, resumed, outputs)

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
        return methods, skipped

    def _prepare_dir(self, rd: RunDir) -> None:
        if rd.start(self.protocol.digest()):
            self.log(f"resuming the run in {self.run_dir}")
        rd.write_protocol(self.protocol.model_dump(mode="json"))
        rd.write_plugins(self._plugins_info())

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
        return any(self.protocol.splits[s].kind == "external" for s in method.splits)

    def _load_data(self, rd: RunDir) -> RunData:
        train = self._load_set(rd, self.protocol.data, "training", prefix="")
        test = None
        if self.protocol.test_data is not None and any(map(self._uses_external, self.protocol.methods.values())):
            test = self._load_set(rd, self.protocol.test_data, "test", prefix="test_")
            if self.protocol.test_data.colour_normalize == "reinhard":
                test.colour_map = self._colour_map(train, test)
        return RunData(train, test)

    def _load_set(self, rd: RunDir, spec: Any, what: str, prefix: str) -> ImageSet:
        from cytocompare.datasets import load_dataset

        self.log(f"[data] reading {what} set {spec.path}")
        loaded = load_dataset(
            spec.path, layout=spec.layout, classes=spec.classes, label_map=spec.label_map,
            label_from=spec.label_from, image_size=spec.image_size, resize=spec.resize, crop=spec.center_crop,
            on_bad_file=spec.on_bad_file, n_jobs=self.protocol.n_jobs,
            progress=throttled_progress(self.log, 2, lambda done, total: f"[data]   checked {done}/{total} files"),
        )
        for w in loaded.warnings:
            self.log(f"[data]   warning: {w}")
        if loaded.skipped:
            self.log(f"[data]   {len(loaded.skipped)} file(s) not used (bad, unmapped or excluded); "
                     f"each is listed with its cause in {prefix}skipped.csv")
        self.log(f"[data]   {len(loaded.images)} images, classes: "
                 + ", ".join(f"{c} {n}" for c, n in sorted(loaded.class_counts.items())))
        rd.write_dataset(loaded, prefix)
        return loaded.images

    def _colour_map(self, train: ImageSet, test: ImageSet) -> Any:
        """Dataset-level Reinhard map of the external set onto the training set's colours."""
        from cytocompare.colour import ColourMap, LabStats

        source = LabStats.of(test, seed=self.protocol.seed)
        target = LabStats.of(train, seed=self.protocol.seed)
        self.log("[data] test set colour-normalised (dataset-level Reinhard, L*a*b*): mean "
                 f"{tuple(round(v, 1) for v in source.mean)} -> {tuple(round(v, 1) for v in target.mean)}, sd "
                 f"{tuple(round(v, 1) for v in source.std)} -> {tuple(round(v, 1) for v in target.std)}")
        return ColourMap(source, target)

    def _split_plan(self, rd: RunDir, data: RunData) -> SplitPlan:
        from cytocompare.splits import make_plan

        train, test = data.train, data.test
        plan = make_plan(
            train.labels, train.sha256, self.protocol.splits, seed=self.protocol.seed,
            small_classes=self.protocol.small_classes, paths=train.paths,
            external_labels=None if test is None else test.labels,
            external_sha256=None if test is None else test.sha256,
        )
        if rd.has_split_plan():
            # a resumed run must see the very same images and assignments
            previous = rd.read_split_plan()
            if previous.hash != plan.hash:
                raise CytocompareError(
                    f"the data changed since this run started: split plan {previous.hash[:12]} in "
                    f"{self.run_dir / 'splits.json'}, now {plan.hash[:12]}; use a new --output directory so "
                    "that no finished work is lost"
                )
        rd.write_split_plan(plan, train.paths, train.labels)
        for excluded in plan.excluded:
            self.log(f"[splits] {excluded.describe()}")
        for warning in plan.warnings:
            self.log(f"[splits] warning: {warning}")
        self.log(f"[splits] plan {plan.hash[:12]}: " + ", ".join(
            f"{n} ({len(plan.folds(n))} fold{'s' if len(plan.folds(n)) > 1 else ''})" for n in plan.split_names))
        return plan

    def _run_methods(self, rd: RunDir, methods: dict[str, MethodSpec], plan: SplitPlan,
                     data: RunData) -> tuple[int, int]:
        """Run every fold not yet done; (folds run, folds resumed)."""
        cache = None
        done = resumed = 0
        for mname, method in methods.items():
            pipeline = build_method(method, self.registry, self.protocol.seed, self.protocol.n_jobs)
            features: dict[str, np.ndarray] = {}
            for split in method.splits:
                folds = plan.folds(split)
                for k, fold in enumerate(folds):
                    task = FoldTask(mname, method, split, k, fold, f"[{mname} | {split} | fold {k + 1}/{len(folds)}]")
                    if rd.has_predictions(mname, split, k):
                        resumed += 1
                        self.log(f"{task.tag} already done, resumed")
                        continue
                    if pipeline.features is not None and not features:
                        cache = cache or self._cache()
                        features = self._features(cache, pipeline, data, method, task.tag)
                    self._run_fold(rd, task, pipeline, data, features)
                    done += 1
        return done, resumed

    def _cache(self) -> Any:
        from cytocompare.feature_cache import FeatureCache

        root = default_cache_dir(self.protocol)
        self.log(f"[features] cache {root}")
        return FeatureCache(root)

    def _features(self, cache: Any, pipeline: Pipeline, data: RunData, method: MethodSpec,
                  tag: str) -> dict[str, np.ndarray]:
        """A method's features of every image it will see: the training set, and the external
        test set when one of its splits is external (computed once, cached by content)."""
        extractor = clone(pipeline.features).fit(data.train)
        sets = {"train": data.train}
        if data.test is not None and self._uses_external(method):
            sets["test"] = data.test
        out = {}
        for name, images in sets.items():
            t = time.perf_counter()
            progress = throttled_progress(self.log, 5, lambda done, total, name=name:
                                          f"{tag} features ({name}): {done}/{total} images")
            out[name] = cache.compute(extractor, images, n_jobs=self.protocol.n_jobs, progress=progress)
            self.log(f"{tag} features ({name}): {out[name].shape[1]} per image, {time.perf_counter() - t:.1f} s")
        return out

    def _run_fold(self, rd: RunDir, task: FoldTask, pipeline: Pipeline, data: RunData,
                  features: dict[str, np.ndarray]) -> None:
        """Fit on the fold's training part, predict its test part, write both, tidy up."""
        test_set = data.test_set(task)
        model = clone(pipeline)
        ckpt_dir = self._give_checkpoint_dir(rd, model, task)
        self.log(f"{task.tag} fit on {len(task.fold.train)} images"
                 + (f" (checkpoints in {ckpt_dir})" if ckpt_dir else ""))
        if model.features is not None:
            fitted = self._fit_on_features(model, task, data, features)
        else:
            fitted = self._fit_on_images(model, task, data, test_set)
        y_test = test_set.labels[task.fold.test]
        acc = float(np.mean(fitted.prediction == y_test)) if len(y_test) else float("nan")
        self.log(f"{task.tag} fit {fitted.fit_seconds:.1f} s, predict {len(task.fold.test)} images "
                 f"{fitted.predict_seconds:.1f} s, accuracy {acc:.3f}")
        self._write_fold(rd, task, fitted, test_set)
        if task.method.artifacts and task.k == 0 and model.features is None:
            self._write_artifacts(rd, task, fitted.model, test_set)
        if ckpt_dir is not None and not task.method.keep_checkpoints:
            # the fold's predictions are on disk: the checkpoint has done its job (ResNeXt-50: ~200 MB a fold)
            shutil.rmtree(ckpt_dir, ignore_errors=True)

    @staticmethod
    def _fit_on_features(model: Pipeline, task: FoldTask, data: RunData,
                         features: dict[str, np.ndarray]) -> FittedFold:
        """Selector and classifier fitted on the training rows of precomputed features."""
        fold = task.fold
        t = time.perf_counter()
        model.fit_features(np.asarray(features["train"][fold.train]), data.train.labels[fold.train])
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        F_test = np.asarray(features["test" if task.external else "train"][fold.test])
        pred = model.predict_features(F_test)
        scores = model.predict_proba_features(F_test)
        return FittedFold(model, pred, scores, fit_s, time.perf_counter() - t)

    @staticmethod
    def _fit_on_images(model: Pipeline, task: FoldTask, data: RunData, test_set: ImageSet) -> FittedFold:
        """An image classifier fitted on the fold's training images."""
        fold = task.fold
        t = time.perf_counter()
        model.fit(data.train.subset(fold.train), data.train.labels[fold.train])
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        test_images = test_set.subset(fold.test)
        pred = model.predict(test_images)
        scores = model.predict_proba(test_images) if hasattr(model.classifier_, "predict_proba") else None
        return FittedFold(model, pred, scores, fit_s, time.perf_counter() - t)

    def _write_fold(self, rd: RunDir, task: FoldTask, fitted: FittedFold, test_set: ImageSet) -> None:
        """The fold's predictions and what was fitted (the fold JSON, written last)."""
        model, fold = fitted.model, task.fold
        report = model.classifier_.fit_report() if isinstance(model.classifier_, ReportsFit) else {}
        info = {
            "fit_seconds": fitted.fit_seconds,
            "predict_seconds": fitted.predict_seconds,
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
        try:
            model.classifier_.write_artifacts(out, test_set.subset(task.fold.test), test_set.labels[task.fold.test])
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
            test_data=None if self.protocol.test_data is None else str(self.protocol.test_data.path),
            versions={"cytocompare": __version__, "python": sys.version.split()[0]},
        ))

    def _tolerated_pairs(self) -> list[tuple[str, str]]:
        spec = self.protocol.tolerance.pairs
        if spec == "none":
            return []
        if spec == "scheme":
            return [tuple(sorted(p)) for p in self.scheme.tolerated_pairs]  # type: ignore[misc]
        return [tuple(p) for p in spec]


def _selected_names(model: Pipeline) -> list[str] | None:
    selector = getattr(model, "selector_", None)
    if selector is None or not hasattr(selector, "get_support"):
        return None
    names = model.features.get_feature_names_out() if model.features is not None else None
    idx = selector.get_support(indices=True)
    if names is None:
        return [int(i) for i in idx]
    return [names[int(i)] for i in idx]
