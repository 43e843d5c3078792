"""The runner: one split plan, applied identically to every method; resumable; all output in files.

A run directory is filled fold by fold. Each fold's predictions are written the moment they
exist (atomically), so an interrupted run loses at most the fold in progress, and running the
same protocol into the same directory again resumes at the first unfinished fold.
"""

from __future__ import annotations

import datetime as _dt
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
import yaml

from cytocompare import __version__
from cytocompare.base import clone
from cytocompare.classes import ClassScheme, load_scheme
from cytocompare.config import MethodSpec, Protocol, check_against_registry
from cytocompare.errors import CytocompareError, ProtocolError
from cytocompare.images import ImageSet
from cytocompare.pipeline import Pipeline
from cytocompare.plugins import get_plugin_manager, get_registry, plugin_distributions
from cytocompare.registry import Registry

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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


def _with_seed(spec_params: dict[str, Any], factory: Any, seed: int) -> dict[str, Any]:
    """Give components that take a ``random_state`` the protocol's seed unless set explicitly."""
    import inspect

    params = dict(spec_params)
    target = factory.__init__ if inspect.isclass(factory) else factory
    if "random_state" in inspect.signature(target).parameters and "random_state" not in params:
        params["random_state"] = seed
    return params


def build_method(method: MethodSpec, registry: Registry, seed: int) -> Pipeline:
    """Instantiate a method's components as a :class:`Pipeline`."""
    def make(kind: Any, ref: Any) -> Any:
        if ref is None:
            return None
        spec = registry.get(kind, ref.name)
        spec.check_params(ref.params)
        return spec.load()(**_with_seed(ref.params, spec.load(), seed))

    return Pipeline(
        features=make("feature_extractor", method.features),
        selector=make("feature_selector", method.selector),
        classifier=make("classifier", method.classifier),
    )


class Runner:
    """Runs a validated protocol into a run directory."""

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
        base = Path(protocol_path).resolve().parent if protocol_path else Path.cwd()
        # data paths in a protocol are relative to the protocol file; CLI overrides to the cwd
        self.protocol.data.path = data_path or _resolve(self.protocol.data.path, base)
        if self.protocol.test_data is not None:
            self.protocol.test_data.path = test_data_path or _resolve(self.protocol.test_data.path, base)
        elif test_data_path:
            raise ProtocolError("--test-data given but the protocol has no 'test_data' section")
        self.run_dir = Path(run_dir)
        self.registry = registry or get_registry()
        self.log = log
        self.only = only
        self.scheme = load_scheme(self.protocol.class_scheme)

    # ------------------------------------------------------------------ public
    def run(self) -> RunResult:
        from cytocompare.rundir import RunDir

        skipped = check_against_registry(self.protocol, self.registry)
        for name in skipped:
            self.log(f"[skip] method {name!r}: its plugin is not installed (optional method)")
        methods = {k: v for k, v in self.protocol.methods.items() if k not in skipped}
        if self.only:
            unknown = [m for m in self.only if m not in self.protocol.methods]
            if unknown:
                raise ProtocolError(f"--only: unknown method(s) {unknown}; protocol has {list(self.protocol.methods)}")
            methods = {k: v for k, v in methods.items() if k in self.only}
        rd = RunDir(self.run_dir)
        self._prepare_dir(rd)
        t0 = time.perf_counter()
        train, test = self._load_data(rd)
        plan = self._split_plan(rd, train, test)
        dropped = {e.label for e in plan.excluded if e.policy == "drop"}
        labels = ordered_labels(set(train.labels.tolist()) - dropped, self.scheme)
        self._write_run_json(rd, train, labels, methods, status="running")

        cache = None
        done = resumed = 0
        for mname, method in methods.items():
            pipeline = build_method(method, self.registry, self.protocol.seed)
            features: dict[str, np.ndarray] = {}
            for split in method.splits:
                folds = plan.folds(split)
                for k, fold in enumerate(folds):
                    tag = f"[{mname} | {split} | fold {k + 1}/{len(folds)}]"
                    if rd.has_predictions(mname, split, k):
                        resumed += 1
                        self.log(f"{tag} already done, resumed")
                        continue
                    if pipeline.features is not None and not features:
                        cache = cache or self._cache()
                        features = self._features(cache, pipeline, train, test, method, tag)
                    self._run_fold(rd, mname, method, pipeline, split, k, fold, train, test, features, tag)
                    done += 1
        self.log(f"all folds finished in {time.perf_counter() - t0:.1f} s; evaluating")
        # every fold is done: record it before the reports, so that index.html says so
        self._write_run_json(rd, train, labels, methods, status="finished")
        outputs = self._evaluate_and_report(rd)
        self.log(f"run directory: {self.run_dir}")
        return RunResult(self.run_dir, list(methods), skipped, done, resumed, outputs)

    # ------------------------------------------------------------------ steps
    def _prepare_dir(self, rd: Any) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        run_json = self.run_dir / "run.json"
        if run_json.exists():
            previous = rd.info.get("protocol_hash")
            if previous != self.protocol.digest():
                raise CytocompareError(
                    f"{self.run_dir} holds a run of a different protocol (hash {previous}, now "
                    f"{self.protocol.digest()}); choose another --output directory so that no finished work is lost"
                )
            self.log(f"resuming the run in {self.run_dir}")
        elif any(self.run_dir.iterdir()):
            raise CytocompareError(f"{self.run_dir} is not empty and is not a cytocompare run directory")
        resolved = self.protocol.model_dump(mode="json")
        (self.run_dir / "protocol.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
        rd.write_json("plugins.json", self._plugins_info())

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

    def _load_data(self, rd: Any) -> tuple[ImageSet, ImageSet | None]:
        from cytocompare.datasets import load_dataset, write_dataset_csv, write_skipped_csv

        def load(spec: Any, what: str) -> Any:
            self.log(f"[data] reading {what} set {spec.path}")
            last = [0.0]

            def progress(done: int, total: int) -> None:
                now = time.perf_counter()
                if now - last[0] > 2 or done == total:
                    last[0] = now
                    self.log(f"[data]   checked {done}/{total} files")

            loaded = load_dataset(
                spec.path, layout=spec.layout, classes=spec.classes, label_map=spec.label_map,
                label_from=spec.label_from, image_size=spec.image_size, resize=spec.resize, crop=spec.center_crop,
                on_bad_file=spec.on_bad_file, progress=progress,
            )
            for w in loaded.warnings:
                self.log(f"[data]   warning: {w}")
            if loaded.skipped:
                prefix = "" if what == "training" else "test_"
                self.log(f"[data]   {len(loaded.skipped)} file(s) not used (bad, unmapped or excluded); "
                         f"each is listed with its cause in {prefix}skipped.csv")
            self.log(f"[data]   {len(loaded.images)} images, classes: "
                     + ", ".join(f"{c} {n}" for c, n in sorted(loaded.class_counts.items())))
            prefix = "" if what == "training" else "test_"
            write_dataset_csv(loaded, self.run_dir / f"{prefix}dataset.csv")
            write_skipped_csv(loaded.skipped, self.run_dir / f"{prefix}skipped.csv")
            return loaded

        train = load(self.protocol.data, "training").images
        test = None
        needs_test = any(self.protocol.splits[s].kind == "external"
                         for m in self.protocol.methods.values() for s in m.splits)
        if self.protocol.test_data is not None and needs_test:
            test = load(self.protocol.test_data, "test").images
            if self.protocol.test_data.colour_normalize == "reinhard":
                test.colour_map = self._colour_map(train, test)
        return train, test

    def _colour_map(self, train: ImageSet, test: ImageSet) -> Any:
        """Dataset-level Reinhard map of the external set onto the training set's colours."""
        from cytocompare.colour import ColourMap, LabStats

        source = LabStats.of(test, seed=self.protocol.seed)
        target = LabStats.of(train, seed=self.protocol.seed)
        self.log("[data] test set colour-normalised (dataset-level Reinhard, L*a*b*): mean "
                 f"{tuple(round(v, 1) for v in source.mean)} -> {tuple(round(v, 1) for v in target.mean)}, sd "
                 f"{tuple(round(v, 1) for v in source.std)} -> {tuple(round(v, 1) for v in target.std)}")
        return ColourMap(source, target)

    def _split_plan(self, rd: Any, train: ImageSet, test: ImageSet | None) -> Any:
        from cytocompare.splits import SplitPlan, SplitSpec, make_plan

        specs = {name: SplitSpec.coerce(s.model_dump()) for name, s in self.protocol.splits.items()}
        plan = make_plan(
            train.labels, train.sha256, specs, seed=self.protocol.seed, small_classes=self.protocol.small_classes,
            paths=train.paths,
            external_labels=None if test is None else test.labels,
            external_sha256=None if test is None else test.sha256,
        )
        stored = self.run_dir / "splits.json"
        if stored.exists():
            # a resumed run must see the very same images and assignments
            previous = SplitPlan.from_files(stored, self.run_dir / "splits.csv")
            if previous.hash != plan.hash:
                raise CytocompareError(
                    f"the data changed since this run started: split plan {previous.hash[:12]} in {stored}, "
                    f"now {plan.hash[:12]}; use a new --output directory so that no finished work is lost"
                )
        plan.to_csv(self.run_dir / "splits.csv", train.paths, train.labels)
        plan.to_json(stored)
        for excluded in plan.excluded:
            self.log(f"[splits] {excluded.describe()}")
        for warning in plan.warnings:
            self.log(f"[splits] warning: {warning}")
        self.log(f"[splits] plan {plan.hash[:12]}: " + ", ".join(
            f"{n} ({len(plan.folds(n))} fold{'s' if len(plan.folds(n)) > 1 else ''})" for n in plan.split_names))
        return plan

    def _cache(self) -> Any:
        from cytocompare.feature_cache import FeatureCache

        root = default_cache_dir(self.protocol)
        self.log(f"[features] cache {root}")
        return FeatureCache(root)

    def _features(self, cache: Any, pipeline: Pipeline, train: ImageSet, test: ImageSet | None,
                  method: MethodSpec, tag: str) -> dict[str, np.ndarray]:
        extractor = clone(pipeline.features).fit(train)
        out = {}
        for name, images in (("train", train), ("test", test)):
            if images is None or (name == "test" and not any(
                    self.protocol.splits[s].kind == "external" for s in method.splits)):
                continue
            t = time.perf_counter()
            last = [0.0]

            def progress(done: int, total: int) -> None:
                now = time.perf_counter()
                if now - last[0] > 5 or done == total:
                    last[0] = now
                    self.log(f"{tag} features ({name}): {done}/{total} images")

            out[name] = cache.compute(extractor, images, n_jobs=self.protocol.n_jobs, progress=progress)
            self.log(f"{tag} features ({name}): {out[name].shape[1]} per image, {time.perf_counter() - t:.1f} s")
        return out

    def _run_fold(self, rd: Any, mname: str, method: MethodSpec, pipeline: Pipeline, split: str, k: int,
                  fold: Any, train: ImageSet, test: ImageSet | None, features: dict[str, np.ndarray],
                  tag: str) -> None:
        external = getattr(fold, "test_source", "train") == "external"
        test_set = test if external else train
        if test_set is None:
            raise CytocompareError(f"{tag}: external split but no test data was loaded")
        y_train = train.labels[fold.train]
        y_test = test_set.labels[fold.test]
        model = clone(pipeline)
        ckpt_dir = self._give_checkpoint_dir(model, mname, split, k)
        self.log(f"{tag} fit on {len(fold.train)} images" + (f" (checkpoints in {ckpt_dir})" if ckpt_dir else ""))
        t = time.perf_counter()
        if model.features is not None:
            F_test_all = features["test"] if external else features["train"]
            model.fit_features(np.asarray(features["train"][fold.train]), y_train)
            fit_s = time.perf_counter() - t
            t = time.perf_counter()
            F_test = np.asarray(F_test_all[fold.test])
            pred = model.predict_features(F_test)
            scores = model.predict_proba_features(F_test)
        else:
            model.fit(train.subset(fold.train), y_train)
            fit_s = time.perf_counter() - t
            t = time.perf_counter()
            pred = model.predict(test_set.subset(fold.test))
            scores = model.predict_proba(test_set.subset(fold.test)) if hasattr(model.classifier_, "predict_proba") else None
        predict_s = time.perf_counter() - t
        acc = float(np.mean(pred == y_test)) if len(y_test) else float("nan")
        self.log(f"{tag} fit {fit_s:.1f} s, predict {len(fold.test)} images {predict_s:.1f} s, accuracy {acc:.3f}")
        info = {
            "fit_seconds": fit_s,
            "predict_seconds": predict_s,
            "n_train": int(len(fold.train)),
            "n_test": int(len(fold.test)),
            "test_source": "external" if external else "train",
            "components": {
                "features": repr(model.features_) if getattr(model, "features_", None) is not None else repr(model.features),
                "selector": repr(model.selector_) if getattr(model, "selector_", None) is not None else None,
                "classifier": repr(model.classifier_),
            },
            "variant": getattr(model.classifier_, "variant_", None),
            "best_params": _jsonable(getattr(model.classifier_, "best_params_", None)),
            "selected_features": _selected_names(model),
            "finished": _now(),
        }
        rd.write_predictions(
            mname, split, k, images=fold.test, paths=test_set.paths[fold.test], truth=y_test, prediction=pred,
            scores=scores, classes=[str(c) for c in model.classes_], info=info,
        )
        if method.artifacts and k == 0 and hasattr(model.classifier_, "write_artifacts") and model.features is None:
            out = self.run_dir / "artifacts" / mname / split
            try:
                model.classifier_.write_artifacts(out, test_set.subset(fold.test), y_test)
                self.log(f"{tag} artifacts written to {out}")
            except ImportError as exc:
                self.log(f"{tag} artifacts skipped: {exc}")
        if ckpt_dir is not None and not method.keep_checkpoints:
            # the fold's predictions are on disk: the checkpoint has done its job (ResNeXt-50: ~200 MB a fold)
            shutil.rmtree(ckpt_dir, ignore_errors=True)

    def _give_checkpoint_dir(self, model: Pipeline, mname: str, split: str, k: int) -> Path | None:
        """A classifier with a ``checkpoint_dir`` parameter left at None trains into a folder of the
        run directory, so that an interrupted run resumes inside the fold, not only at its start."""
        params = model.classifier.get_params(deep=False)
        if "checkpoint_dir" not in params or params["checkpoint_dir"] is not None:
            return None
        path = self.run_dir / "checkpoints" / mname / split / f"fold{k}"
        model.classifier.set_params(checkpoint_dir=str(path))
        return path

    def _evaluate_and_report(self, rd: Any) -> list[Path]:
        from cytocompare.metrics import evaluate_run

        evaluate_run(rd)
        outputs: list[Path] = []
        for name in self.protocol.reports:
            reporter = self.registry.create("reporter", name)
            written = reporter.report(self.run_dir)
            outputs += written
            self.log(f"[report] {name}: {', '.join(str(Path(p).relative_to(self.run_dir)) for p in written) or 'nothing'}")
        return outputs

    def _write_run_json(self, rd: Any, train: ImageSet, labels: list[str], methods: dict[str, MethodSpec],
                        status: str) -> None:
        info = rd.info if (self.run_dir / "run.json").exists() else {}
        counts = {c: int(n) for c, n in zip(*np.unique(train.labels, return_counts=True))}
        pairs = self._tolerated_pairs()
        no_call = self.protocol.evaluation.no_call_classes
        info.update({
            "status": status,
            "protocol_name": self.protocol.name,
            "protocol_hash": self.protocol.digest(),
            "labels": labels,
            "class_names": {c: self.scheme.get(c).name for c in labels if c in self.scheme.codes},
            "class_counts": {c: counts.get(c, 0) for c in labels},
            "tolerated_pairs": [sorted(p) for p in pairs],
            "tolerance_source": "inferred from Matek et al. 2021 Table 1" if self.protocol.tolerance.pairs == "scheme" else "protocol",
            "no_call_classes": sorted(no_call if no_call is not None else self.scheme.no_call_classes),
            # merged, so that a later `--only` run does not hide methods run before it
            "methods": info.get("methods", {}) | {m: {"splits": spec.splits, "components": {
                p: (getattr(spec, p).model_dump() if getattr(spec, p) is not None else None)
                for p in ("features", "selector", "classifier")}} for m, spec in methods.items()},
            "splits": {n: s.model_dump() | ({"n_folds": s.n_splits} if s.kind == "kfold" else {"n_folds": 1})
                       for n, s in self.protocol.splits.items()},
            "evaluators": self.protocol.evaluation.evaluators,
            "reporters": self.protocol.reports,
            "data": str(self.protocol.data.path),
            "test_data": None if self.protocol.test_data is None else str(self.protocol.test_data.path),
            "versions": {"cytocompare": __version__, "python": sys.version.split()[0]},
        })
        info.setdefault("started", _now())
        if status == "finished":
            info["finished"] = _now()
        rd.write_json("run.json", info)

    def _tolerated_pairs(self) -> list[tuple[str, str]]:
        spec = self.protocol.tolerance.pairs
        if spec == "none":
            return []
        if spec == "scheme":
            return [tuple(sorted(p)) for p in self.scheme.tolerated_pairs]  # type: ignore[misc]
        return [tuple(p) for p in spec]


def _resolve(path: str, base: Path) -> str:
    if path.startswith("bundled:") or Path(path).is_absolute():
        return path
    return str((base / path).resolve())


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _jsonable(obj: Any) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)


def _selected_names(model: Pipeline) -> list[str] | None:
    selector = getattr(model, "selector_", None)
    if selector is None or not hasattr(selector, "get_support"):
        return None
    names = model.features.get_feature_names_out() if model.features is not None else None
    idx = selector.get_support(indices=True)
    if names is None:
        return [int(i) for i in idx]
    return [names[int(i)] for i in idx]


def run_protocol(path: str | Path, output: str | Path, **kwargs: Any) -> RunResult:
    """Load, validate and run a protocol file (the ``cytocompare run`` command)."""
    from cytocompare.config import load_protocol

    protocol = load_protocol(path)
    return Runner(protocol, output, protocol_path=path, **kwargs).run()
