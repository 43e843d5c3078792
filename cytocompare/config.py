"""Protocol files: YAML → validated pydantic models, checked against the installed registry.

Everything is validated before any work starts: unknown keys, unknown component names (also
under ``optional: true``, when a near miss of an installed name), misspelt parameters, bad
parameter VALUES (every component is built and checked), class codes outside the class scheme
and inconsistent references are collected into ONE :class:`ProtocolError` that lists every
problem with its location and the valid choices.

:meth:`Protocol.digest` identifies what a run directory's results were made from (the
result-relevant keys only, :data:`RESULT_NEUTRAL_KEYS` aside); :func:`protocol_changes` names the
result-relevant keys that differ from a stored ``protocol.yaml``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cytocompare.classes import ClassScheme, label_remedy, load_scheme
from cytocompare.errors import ProtocolError
from cytocompare.evaluation import DEFAULT_EVALUATORS, DEFAULT_REPORTERS
from cytocompare.pipeline import input_chain_problem
from cytocompare.registry import METHOD_KINDS, ComponentSpec, Kind, Registry, protocol_defaults
from cytocompare.splits import UNNAMED_TEST_SET, ExternalSpec, SplitSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class DataSpec(_Strict):
    """Where the images are and how to read them."""

    path: str = Field(description="folder, manifest CSV, or 'bundled:<name>' for a bundled sample")
    layout: Literal["auto", "paper", "flat", "class-folders", "manifest"] = "auto"
    classes: list[str] | None = Field(None, description="keep only these class codes (others are reported)")
    label_from: Literal["folder", "prefix"] = "folder"
    label_map: dict[str, str] | None = Field(
        None, description="folder name or file prefix → class code; several may map to one code (BNE: NGB, SNE: NGS)")
    unmapped: Literal["skip", "predict"] = Field(
        "skip", description="test_data only: images whose label is not in label_map: skip (listed in "
        "test_skipped.csv) or predict (kept under their own label, predicted and shown in the external "
        "confusion matrix, never scored: classes the model never learnt, e.g. platelets)")
    image_size: tuple[int, int] | None = Field(None, description="expected (height, width); others are bad files")
    center_crop: tuple[int, int] | None = Field(None, description="crop the centre (height, width) on load, before resize")
    resize: tuple[int, int] | None = Field(None, description="resize every image to (height, width) on load")
    scale: Literal["red_cells"] | Annotated[float, Field(gt=0.05, le=20)] | None = Field(
        None, description="test_data only: rescale every image by a factor (bilinear) on load, before "
        "center_crop, so that the other lab's cells get the training set's size in pixels: a fixed factor "
        "(e.g. 1.33 when its pixels are 1.33 times as large), red_cells (the ratio of the two sets' median "
        "red-cell diameters, measured on a seeded sample of each set: cytocompare/scale.py) or none")
    on_bad_file: Literal["stop", "skip"] = "stop"
    colour_normalize: Literal["none", "reinhard", "macenko"] = Field(
        "none", description="test_data only: map this set's colours to the training set's: reinhard (overall "
        "L*a*b* statistics) or macenko (stain vectors and amounts in optical density); dataset-level")
    feature_alignment: Literal["none", "standardize"] = Field(
        "none", description="test_data only: align each handcrafted feature's mean and sd over the whole "
        "test set to the training set's before the selector and classifier (cytocompare/feature_alignment.py)")
    allow_outside_paths: bool = Field(
        False, description="manifest only: accept absolute paths and '..' paths that leave the manifest's folder "
        "(refused by default, each named in skipped.csv)")

    @field_validator("scale", mode="before")
    @classmethod
    def _scale_value(cls, v: Any) -> Any:
        """One clear message for every bad value (pydantic's would list each member of the union)."""
        expected = "expected none, red_cells or a factor (a number above 0.05, at most 20)"
        if v is None:
            return None
        if isinstance(v, str):
            word = v.strip().lower()
            if word in ("none", "null", ""):
                return None
            if word == "red_cells":
                return word
            try:
                v = float(word)
            except ValueError:
                raise ValueError(f"{expected}, got {v!r}") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):  # YAML's yes/no are not factors
            raise ValueError(f"{expected}, got {v!r}")
        if not 0.05 < v <= 20:
            raise ValueError(f"{expected}, got {v!r}")
        return float(v)

    @model_validator(mode="after")
    def _measured_scale_without_resize(self) -> DataSpec:
        if self.scale == "red_cells" and self.resize is not None:
            raise ValueError("scale: red_cells matches the test images' pixel size to the training images'; a "
                             "resize after it would change it again: use center_crop (the training image size) "
                             "instead of resize")
        return self

    @model_validator(mode="after")
    def _unmapped_needs_map(self) -> DataSpec:
        if self.unmapped == "predict" and self.label_map is None:
            raise ValueError("unmapped: predict keeps the images whose label is not in label_map; without a "
                             "label_map every label is used as it is: add a label_map or remove unmapped")
        return self

    @property
    def fixed_scale(self) -> float | None:
        """The rescale factor known before any image is read (a number given in the protocol)."""
        return self.scale if isinstance(self.scale, float) else None


def test_file_prefix(name: str) -> str:
    """The run-directory file prefix of a test set: ``test_`` for the unnamed one, ``test_<name>_``."""
    return "test_" if name == UNNAMED_TEST_SET else f"test_{name}_"


class ComponentRef(_Strict):
    """A registered component and its constructor parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class MethodSpec(_Strict):
    """One method: [features → [selector →]] classifier, run on the named splits."""

    features: ComponentRef | None = None
    selector: ComponentRef | None = None
    classifier: ComponentRef
    splits: list[str] = Field(min_length=1)
    optional: bool = Field(False, description="skip (with a warning) when its plugin is not installed")
    artifacts: bool = Field(True, description="let the classifier write extra files (saliency maps, UMAP)")
    on_feature_failure: Literal["keep", "skip", "stop"] = Field(
        "keep", description="cells the feature extractor flags as failed (e.g. no nucleus found): keep them "
        "(listed in feature_failures.csv), skip them for this method (training and testing), or stop the run")
    keep_checkpoints: bool = Field(
        False, description="keep the per-fold training checkpoints of checkpointing classifiers "
        "(cytocompare.protocols.Checkpointing; deleted once the fold's predictions are written)")


class ToleranceSpec(_Strict):
    """Adjacent classes whose mix-up the tolerant metrics forgive; 'scheme' = the scheme's default."""

    pairs: Literal["scheme", "none"] | list[tuple[str, str]] = "scheme"


class EvaluationSpec(_Strict):
    evaluators: list[str] = Field(default_factory=lambda: list(DEFAULT_EVALUATORS))
    no_call_classes: list[str] | None = Field(None, description="default: the scheme's (ART, NIF)")


class NearDuplicatesSpec(_Strict):
    """Near-identical images (re-encoded, resized copies) are kept on one side of every split."""

    threshold: Annotated[int, Field(ge=0, le=128)] | None = Field(
        16, description="Hamming distance over the 128-bit perceptual hash (phash + dhash) at or below which two "
        "images are one group (docs/reliability.md); null: byte-identical files only")


class ComputeSpec(_Strict):
    """Where feature extraction and the folds run (cytocompare/compute.py); result-neutral."""

    backend: Literal["local", "dask"] = Field(
        "local", description="local: this machine (n_jobs processes); dask: a dask.distributed cluster")
    scheduler: str | None = Field(
        None, description="dask only: the scheduler's address (tcp://host:8786), or 'local' to start a "
        "LocalCluster of n_jobs single-threaded worker processes here")

    @model_validator(mode="after")
    def _scheduler_with_dask(self) -> ComputeSpec:
        if self.backend == "dask" and not self.scheduler:
            raise ValueError("backend dask needs a scheduler: its address (tcp://host:8786) or 'local'")
        if self.backend == "local" and self.scheduler is not None:
            raise ValueError(f"a scheduler ({self.scheduler!r}) is for backend: dask; the local backend has none")
        return self


class Protocol(_Strict):
    """A whole comparison: data, splits, methods, evaluation and reports."""

    version: Literal[1] = 1
    name: str
    description: str = ""
    seed: int = 42
    class_scheme: str = "matek2021"
    data: DataSpec
    test_data: DataSpec | dict[str, DataSpec] | None = Field(
        None, description="the external test set of 'external' splits, or several, named: {pbc: {path: ...}, "
        "other_lab: {path: ...}}, each split naming its own with test_set")
    splits: dict[str, SplitSpec] = Field(min_length=1)
    small_classes: Literal["error", "drop", "train_only"] = "error"
    near_duplicates: NearDuplicatesSpec = Field(default_factory=NearDuplicatesSpec)
    tolerance: ToleranceSpec = Field(default_factory=ToleranceSpec)
    methods: dict[str, MethodSpec] = Field(min_length=1)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    reports: list[str] = Field(default_factory=lambda: list(DEFAULT_REPORTERS))
    comparisons: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="named cross-split comparisons for the comparison-chart reporter: "
        "name -> {method: split} (e.g. the paper's Fig. 3B: classical on holdout70, the CNNs on cv5)")
    n_jobs: Annotated[int, Field(ge=1)] = 1
    cache_dir: str | None = Field(None, description="feature cache; default $CYTOCOMPARE_CACHE or ~/.cache/cytocompare")
    compute: ComputeSpec = Field(default_factory=ComputeSpec)

    @field_validator("test_data", mode="before")
    @classmethod
    def _one_or_named_test_sets(cls, v: Any) -> Any:
        """A mapping with a ``path`` is one set; any other mapping names several (so that
        pydantic reports the errors of the form meant, not of both)."""
        if isinstance(v, dict) and "path" not in v:
            if not v:
                raise ValueError("name at least one test set ({name: {path: ...}}), or give one set ({path: ...})")
            bad = [k for k in v if not isinstance(k, str) or not k or not k.replace("-", "").replace("_", "").isalnum()]
            if bad:
                raise ValueError(f"test set names must be letters, digits, '-' or '_': {bad}")
            return {k: DataSpec.model_validate(spec) if isinstance(spec, dict) else spec for k, spec in v.items()}
        return DataSpec.model_validate(v) if isinstance(v, dict) else v

    @property
    def test_sets(self) -> dict[str, DataSpec]:
        """Every test set by name (the unnamed one is :data:`UNNAMED_TEST_SET`), in protocol order."""
        if self.test_data is None:
            return {}
        if isinstance(self.test_data, DataSpec):
            return {UNNAMED_TEST_SET: self.test_data}
        return dict(self.test_data)

    def test_set_of(self, split: str) -> str:
        """The name of the test set an external split tests on (validated: it exists)."""
        spec = self.splits[split]
        return spec.test_set_name if isinstance(spec, ExternalSpec) else UNNAMED_TEST_SET

    @field_validator("methods")
    @classmethod
    def _method_names(cls, v: dict[str, MethodSpec]) -> dict[str, MethodSpec]:
        for name in v:
            if not name or any(ch in name for ch in "/\\ \t"):
                raise ValueError(f"method name {name!r} must be non-empty without slashes or spaces")
        return v

    @model_validator(mode="after")
    def _references(self) -> Protocol:
        problems = []
        for mname, m in self.methods.items():
            for s in m.splits:
                if s not in self.splits:
                    problems.append(f"methods.{mname}.splits: unknown split {s!r}; defined: {', '.join(self.splits)}")
        if self.data.colour_normalize != "none":
            problems.append("data.colour_normalize: only test_data can be colour-normalised (to the training set's colours)")
        if self.data.scale is not None:
            problems.append("data.scale: only test_data can be rescaled (to the training set's pixel size)")
        if self.data.unmapped != "skip":
            problems.append("data.unmapped: only test_data can keep unmapped images (a training image needs a class)")
        if self.data.feature_alignment != "none":
            problems.append("data.feature_alignment: only test_data's features can be aligned (to the training set's)")
        if any(s.kind == "external" for s in self.splits.values()) and self.test_data is None:
            problems.append("splits: an 'external' split needs a 'test_data' section")
        problems += self._test_set_references()
        for cname, members in self.comparisons.items():
            where = f"comparisons.{cname}"
            if not cname or any(ch in cname for ch in "/\\ \t"):
                problems.append(f"{where}: a comparison name must be non-empty without slashes or spaces")
            if not members:
                problems.append(f"{where}: name at least one method: split")
            for mname, sname in members.items():
                if mname not in self.methods:
                    problems.append(f"{where}.{mname}: unknown method; defined: {', '.join(self.methods)}")
                elif sname not in self.splits:
                    problems.append(f"{where}.{mname}: unknown split {sname!r}; defined: {', '.join(self.splits)}")
                elif sname not in self.methods[mname].splits:
                    problems.append(f"{where}.{mname}: method {mname!r} does not run on split {sname!r} "
                                    f"(its splits: {', '.join(self.methods[mname].splits)})")
            kinds = {self.splits[s].kind == "external" for s in members.values() if s in self.splits}
            if len(kinds) > 1:
                problems.append(f"{where}: compares an external split with splits of data: different test sets "
                                "of different data; compare external splits only with each other")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _test_set_references(self) -> list[str]:
        """Each external split tests on one test set: named ones must be named, and exist."""
        if self.test_data is None:
            return []
        named = isinstance(self.test_data, dict)
        problems = []
        for sname, spec in self.splits.items():
            wanted = getattr(spec, "test_set", None)
            where = f"splits.{sname}.test_set"
            if spec.kind != "external":
                if wanted is not None:
                    problems.append(f"{where}: only an external split tests on a test set")
            elif named and wanted is None:
                problems.append(f"{where}: test_data names several sets ({', '.join(self.test_sets)}): say which one "
                                "this split tests on")
            elif named and wanted not in self.test_sets:
                problems.append(f"{where}: unknown test set {wanted!r}; test_data names {', '.join(self.test_sets)}")
            elif not named and wanted is not None:
                problems.append(f"{where}: test_data is one unnamed set; name it ({{{wanted}: {{path: ...}}}}) or drop "
                                "test_set")
        return problems

    def digest(self) -> str:
        """Hash of the result-relevant part of the resolved protocol (what the run directory's
        results were made from); a resumed run must have the same.

        It covers every key except the result-neutral ones of :data:`RESULT_NEUTRAL_KEYS`:
        ``name``, ``description``, ``n_jobs``, ``cache_dir`` (the feature cache is keyed by
        content), ``compute`` (where the work runs, not what it computes), ``reports`` and
        ``evaluation.evaluators`` (recomputed from the predictions on every run and by
        ``cytocompare report``), and each method's ``artifacts`` and
        ``keep_checkpoints`` (extra files, not results). Everything else is covered: ``version``,
        ``seed``, ``class_scheme``, ``data`` and ``test_data`` (paths included), ``splits``,
        ``small_classes``, ``near_duplicates``, ``tolerance``, ``evaluation.no_call_classes`` and
        the rest of every method (its components and their parameters, ``splits``, ``optional``,
        ``on_feature_failure``). :func:`protocol_changes` names the covered keys that differ.
        """
        blob = json.dumps(result_relevant(self.model_dump(mode="json")), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


#: protocol keys that do not change any result, so changing them does not block a resume
#: (dotted paths; ``*`` stands for any method name). See :meth:`Protocol.digest`.
RESULT_NEUTRAL_KEYS: tuple[str, ...] = (
    "name",
    "description",
    "n_jobs",
    "cache_dir",
    "compute",
    "reports",
    "comparisons",
    "evaluation.evaluators",
    "methods.*.artifacts",
    "methods.*.keep_checkpoints",
)


def result_relevant(dump: dict[str, Any]) -> dict[str, Any]:
    """A protocol dump (``model_dump(mode="json")``, or a ``protocol.yaml`` read back) without the
    :data:`RESULT_NEUTRAL_KEYS`; the input is not modified."""
    out = json.loads(json.dumps(dump))  # a deep copy of plain JSON values

    def drop(node: Any, parts: list[str]) -> None:
        if not isinstance(node, dict):
            return
        head, rest = parts[0], parts[1:]
        keys = list(node) if head == "*" else [head]
        for key in keys:
            if key not in node:
                continue
            if rest:
                drop(node[key], rest)
            else:
                del node[key]

    for key in RESULT_NEUTRAL_KEYS:
        drop(out, key.split("."))
    return out


_ABSENT = object()


def _short(value: Any, limit: int = 100) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if old is _ABSENT or new is _ABSENT:
        out.append(f"{path}: {_short(old)} → {_short(new)}")
    elif isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            _diff(old.get(key, _ABSENT), new.get(key, _ABSENT), f"{path}.{key}" if path else str(key), out)
    elif json.dumps(old, sort_keys=True, default=str) != json.dumps(new, sort_keys=True, default=str):
        # compared as the digest sees them: 1 and 1.0, or true and 1, differ
        out.append(f"{path or '(protocol)'}: {_short(old)} → {_short(new)}")


def protocol_changes(old: dict[str, Any] | None, new: Protocol) -> list[str]:
    """The result-relevant keys that differ between a run directory's protocol (``old``: its
    ``protocol.yaml`` as a dict) and ``new``, one ``"dotted.path: old → new"`` line each
    (values as JSON, ``(absent)`` for a missing key), sorted by path. Empty when only
    result-neutral keys (:data:`RESULT_NEUTRAL_KEYS`) changed, i.e. when the run may resume.

    ``old`` is read through the current :class:`Protocol` model, so a key added to cytocompare
    since (which the new protocol holds with its default) is not a change; a key the model no
    longer knows is named as removed. When ``old`` has a value the model refuses, it is compared
    as it stands; None (no readable ``protocol.yaml``) is one change, ``"protocol.yaml: (missing or
    unreadable)"``.
    """
    if not isinstance(old, dict):
        return ["protocol.yaml: (missing or unreadable)"]
    old_dump, removed = _through_model(old)
    changes = [f"{path}: {_short(value)} → (absent)" for path, value in removed]
    _diff(result_relevant(old_dump), result_relevant(new.model_dump(mode="json")), "", changes)
    return sorted(changes)


def _through_model(old: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """(``old`` as the current model dumps it, [(dotted path, value) of the keys it does not
    know]); ``(old, [])`` unchanged when a value is refused."""
    data = json.loads(json.dumps(old, default=str))
    removed: list[tuple[str, Any]] = []
    for _ in range(100):  # one round per nesting level of unknown keys, at most
        try:
            return Protocol.model_validate(data).model_dump(mode="json"), removed
        except ValidationError as exc:
            errors = exc.errors()
        if any(err["type"] != "extra_forbidden" for err in errors):
            break
        for err in errors:
            node: Any = data
            *parents, key = err["loc"]
            path: list[str] = []
            for part in parents:
                if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int):
                    node = node[part]
                    path.append(str(part))
                # else: the tag of a union member in the location (splits.cv5.kfold.…), not a key
            if not (isinstance(node, dict) and key in node):
                return dict(old), []
            removed.append((".".join([*path, str(key)]), node.pop(key)))
    return dict(old), []


def _render_pydantic(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{loc}\n    {msg}")
    return lines


def parse_protocol(text: str, origin: str = "<protocol>") -> Protocol:
    """Parse and schema-check a protocol (no registry check)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProtocolError(f"{origin} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{origin}: a protocol is a YAML mapping, got {type(data).__name__}")
    try:
        return Protocol.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(f"{origin} is not a valid protocol:\n" + "\n".join(_render_pydantic(exc))) from None


def load_protocol(path: str | Path) -> Protocol:
    path = Path(path)
    if not path.is_file():
        raise ProtocolError(f"protocol file {path} not found")
    return parse_protocol(path.read_text(), str(path))


#: the protocol's name for each part of a method, with its kind
_PARTS: tuple[tuple[str, Kind], ...] = tuple(zip(("features", "selector", "classifier"), METHOD_KINDS))


def check_against_registry(protocol: Protocol, registry: Registry, origin: str = "<protocol>") -> list[str]:
    """Check the whole protocol against what is installed, before any work. Returns the names of
    the optional methods to skip (in protocol order); raises ONE :class:`ProtocolError` listing
    every other problem, each with its location. Checked:

    * every component name (did-you-mean); an ``optional: true`` method is skipped only when a
      component of it is provided by no installed plugin AND is not a near miss of an installed
      name (:meth:`Registry.near_name`, the did-you-mean's cutoff): a near miss is the same error
      as in a required method;
    * every parameter name, then every parameter VALUE: each component is built with its
      parameters (and the injected ``seed``/``n_jobs``, :func:`cytocompare.registry.protocol_defaults`,
      as the runner builds it) and checked against its scikit-learn ``_parameter_constraints``
      (every parameter, with the valid choices), then by its ``validate_params()`` when it
      declares one; a ``ValueError``/``TypeError`` of the constructor is reported as well;
    * the input chain of every method;
    * the class codes the protocol names (``label_map`` targets, ``classes``, tolerated pairs,
      no-call classes) against the class scheme (:func:`_check_codes`);
    * evaluator and reporter names.
    """
    problems: list[str] = []
    skipped: list[str] = []
    for mname, method in protocol.methods.items():
        absent = [(part, kind, ref) for part, kind in _PARTS
                  if (ref := getattr(method, part)) is not None and (kind, ref.name) not in registry]
        if absent and method.optional:
            near = [(part, kind, ref) for part, kind, ref in absent if registry.near_name(kind, ref.name)]
            if not near:  # a plugin that is not installed: skip the method
                skipped.append(mname)
                continue
            # a misspelt name is not a missing plugin: the same error as in a required method
            problems += [f"methods.{mname}.{part}.name\n    {registry.unknown_message(kind, ref.name)}"
                         for part, kind, ref in near]
            continue
        for part, kind in _PARTS:
            ref = getattr(method, part)
            if ref is None:
                continue
            where = f"methods.{mname}.{part}"
            if (kind, ref.name) not in registry:
                problems.append(f"{where}.name\n    {registry.unknown_message(kind, ref.name)}")
                continue
            spec = registry.get(kind, ref.name)
            try:
                spec.check_params(ref.params)
            except ProtocolError as exc:
                problems.append(f"{where}.params\n    {exc}")
                continue
            except Exception as exc:  # the factory failed to import: say which plugin
                problems.append(f"{where}.name\n    {kind} {ref.name!r} from {spec.source} cannot be imported: {exc!r}")
                continue
            problems += _check_values(where, kind, ref, spec, protocol)
        problems += _check_input_chain(mname, method, registry)
    problems += _check_codes(protocol)
    for i, name in enumerate(protocol.evaluation.evaluators):
        if ("evaluator", name) not in registry:
            problems.append(f"evaluation.evaluators.{i}\n    {registry.unknown_message('evaluator', name)}")
    for i, name in enumerate(protocol.reports):
        if ("reporter", name) not in registry:
            problems.append(f"reports.{i}\n    {registry.unknown_message('reporter', name)}")
    if problems:
        raise ProtocolError(f"{origin} is not a valid protocol:\n" + "\n".join(problems))
    return skipped


def _check_values(where: str, kind: Kind, ref: ComponentRef, spec: ComponentSpec, protocol: Protocol) -> list[str]:
    """Build the component as the runner will and check its parameter values; one problem per
    bad value, located at ``<where>.params[.<name>]``."""
    factory = spec.load()
    params = protocol_defaults(kind, ref.params, factory, seed=protocol.seed, n_jobs=protocol.n_jobs)
    injected = {"random_state": "seed", "n_jobs": "n_jobs"}
    label = f"{kind.replace('_', ' ')} {ref.name!r}"

    def loc(name: str | None) -> str:
        if name is None:
            return f"{where}.params"
        if name not in ref.params and name in injected:  # the value came from the protocol's key
            return f"{injected[name]} (given to {where}.params.{name})"
        return f"{where}.params.{name}"

    try:
        component = factory(**params)
    except (ValueError, TypeError) as exc:
        return [f"{loc(None)}\n    {label}: {exc}"]
    except Exception as exc:  # not a parameter problem as far as we can tell, but it cannot run
        return [f"{where}.name\n    {label} from {spec.source} cannot be built with these parameters: {exc!r}"]
    problems: list[str] = []
    constraints = getattr(component, "_parameter_constraints", None)
    if isinstance(constraints, dict) and constraints:
        problems += [f"{loc(name)}\n    {msg}" for name, msg in _constraint_problems(component, constraints, label)]
    validate = getattr(component, "validate_params", None)
    if not problems and callable(validate):
        try:
            validate()
        except (ValueError, TypeError) as exc:
            problems.append(f"{loc(None)}\n    {label}: {exc}")
    return problems


def _constraint_problems(component: Any, constraints: dict[str, Any], label: str) -> list[tuple[str | None, str]]:
    """(parameter, message) for every parameter that breaks its scikit-learn constraint, in the
    constructor's order (scikit-learn's own ``_validate_params`` stops at the first)."""
    try:
        from sklearn.utils._param_validation import validate_parameter_constraints
    except ImportError:  # pragma: no cover - a scikit-learn without the (private) module
        try:
            component._validate_params()
        except (ValueError, TypeError) as exc:
            return [(None, f"{label}: {exc}")]
        return []
    values = component.get_params(deep=False) if hasattr(component, "get_params") else {
        k: getattr(component, k) for k in constraints if hasattr(component, k)}
    out: list[tuple[str | None, str]] = []
    for name, value in values.items():
        if name not in constraints:
            continue
        try:
            validate_parameter_constraints({name: constraints[name]}, {name: value}, caller_name=label)
        except (ValueError, TypeError) as exc:
            out.append((name, str(exc)))
    return out


def _check_codes(protocol: Protocol) -> list[str]:
    """Every class code the protocol names must be a code of its class scheme (the bundled one,
    or the protocol's own scheme file): ``label_map`` targets and ``classes`` of ``data`` and
    ``test_data``, ``tolerance.pairs`` and ``evaluation.no_call_classes``. Folder names and file
    prefixes used as labels are only known once the data is listed: the runner checks them with
    :func:`cytocompare.classes.check_labels`."""
    try:
        scheme: ClassScheme = load_scheme(protocol.class_scheme)
    except ProtocolError as exc:
        return [f"class_scheme\n    {exc}"]
    codes = set(scheme.codes)
    found: list[tuple[str, str]] = []
    named = [("data", protocol.data)] + [("test_data" if n == UNNAMED_TEST_SET else f"test_data.{n}", spec)
                                         for n, spec in protocol.test_sets.items()]
    for key, data in named:
        found += [(f"{key}.label_map.{source}", target) for source, target in (data.label_map or {}).items()]
        found += [(f"{key}.classes.{i}", code) for i, code in enumerate(data.classes or [])]
    if isinstance(protocol.tolerance.pairs, list):
        found += [(f"tolerance.pairs.{i}", code) for i, pair in enumerate(protocol.tolerance.pairs) for code in pair]
    found += [(f"evaluation.no_call_classes.{i}", code)
              for i, code in enumerate(protocol.evaluation.no_call_classes or [])]
    problems = [f"{where}\n    {scheme.unknown_label_message(code)}" for where, code in found if code not in codes]
    if problems:  # what to do, once
        problems.append(f"class_scheme\n    {label_remedy(scheme)}")
    return problems


def _check_input_chain(mname: str, method: MethodSpec, registry: Registry) -> list[str]:
    """A features→classifier chain must agree on the classifier's input type (the rule itself is
    :func:`cytocompare.pipeline.input_chain_problem`, which the Pipeline applies too)."""
    if ("classifier", method.classifier.name) not in registry:
        return []
    try:
        factory = registry.get("classifier", method.classifier.name).load()
    except Exception:  # reported by check_against_registry as an import failure
        return []
    problem = input_chain_problem(
        has_features=method.features is not None, has_selector=method.selector is not None,
        classifier_input=getattr(factory, "input", "features"), classifier_name=method.classifier.name,
    )
    if problem is None:
        return []
    part, message = problem
    return [f"methods.{mname}.{part}\n    {message}"]


def validate_protocol(path: str | Path, registry: Registry | None = None) -> tuple[Protocol, list[str]]:
    """Load a protocol and check it completely. Returns (protocol, optional methods skipped)."""
    from cytocompare.plugins import get_registry

    protocol = load_protocol(path)
    skipped = check_against_registry(protocol, registry or get_registry(), str(path))
    return protocol, skipped
