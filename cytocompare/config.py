"""Protocol files: YAML → validated pydantic models, checked against the installed registry.

Everything is validated before any work starts: unknown keys, unknown component names,
misspelt parameters and inconsistent references are collected into ONE :class:`ProtocolError`
that lists every problem with its location and the valid choices.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cytocompare.errors import ProtocolError
from cytocompare.evaluation import DEFAULT_EVALUATORS, DEFAULT_REPORTERS
from cytocompare.pipeline import input_chain_problem
from cytocompare.registry import METHOD_KINDS, Kind, Registry
from cytocompare.splits import SplitSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class DataSpec(_Strict):
    """Where the images are and how to read them."""

    path: str = Field(description="folder, manifest CSV, or 'bundled:<name>' for a bundled sample")
    layout: Literal["auto", "paper", "flat", "class-folders", "manifest"] = "auto"
    classes: list[str] | None = Field(None, description="keep only these class codes (others are reported)")
    label_from: Literal["folder", "prefix"] = "folder"
    label_map: dict[str, str] | None = Field(None, description="folder name or file prefix → class code")
    image_size: tuple[int, int] | None = Field(None, description="expected (height, width); others are bad files")
    center_crop: tuple[int, int] | None = Field(None, description="crop the centre (height, width) on load, before resize")
    resize: tuple[int, int] | None = Field(None, description="resize every image to (height, width) on load")
    on_bad_file: Literal["stop", "skip"] = "stop"
    colour_normalize: Literal["none", "reinhard"] = Field(
        "none", description="test_data only: map this set's overall L*a*b* colour statistics to the training set's")


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
    keep_checkpoints: bool = Field(
        False, description="keep the per-fold training checkpoints of checkpointing classifiers "
        "(cytocompare.protocols.Checkpointing; deleted once the fold's predictions are written)")


class ToleranceSpec(_Strict):
    """Adjacent classes whose mix-up the tolerant metrics forgive; 'scheme' = the scheme's default."""

    pairs: Literal["scheme", "none"] | list[tuple[str, str]] = "scheme"


class EvaluationSpec(_Strict):
    evaluators: list[str] = Field(default_factory=lambda: list(DEFAULT_EVALUATORS))
    no_call_classes: list[str] | None = Field(None, description="default: the scheme's (ART, NIF)")


class Protocol(_Strict):
    """A whole comparison: data, splits, methods, evaluation and reports."""

    version: Literal[1] = 1
    name: str
    description: str = ""
    seed: int = 42
    class_scheme: str = "matek2021"
    data: DataSpec
    test_data: DataSpec | None = None
    splits: dict[str, SplitSpec] = Field(min_length=1)
    small_classes: Literal["error", "drop", "train_only"] = "error"
    tolerance: ToleranceSpec = Field(default_factory=ToleranceSpec)
    methods: dict[str, MethodSpec] = Field(min_length=1)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    reports: list[str] = Field(default_factory=lambda: list(DEFAULT_REPORTERS))
    n_jobs: Annotated[int, Field(ge=1)] = 1
    cache_dir: str | None = Field(None, description="feature cache; default $CYTOCOMPARE_CACHE or ~/.cache/cytocompare")

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
        if any(s.kind == "external" for s in self.splits.values()) and self.test_data is None:
            problems.append("splits: an 'external' split needs a 'test_data' section")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def digest(self) -> str:
        """Hash of the resolved protocol (what the run directory was made from)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


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
    """Check every component name and parameter. Returns the names of optional methods whose
    plugin is missing (to be skipped); raises ProtocolError listing every other problem."""
    problems: list[str] = []
    skipped: list[str] = []
    for mname, method in protocol.methods.items():
        missing = [ref.name for part, kind in _PARTS if (ref := getattr(method, part)) is not None
                   and (kind, ref.name) not in registry]
        if missing and method.optional:
            skipped.append(mname)
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
            except Exception as exc:  # the factory failed to import: say which plugin
                problems.append(f"{where}.name\n    {kind} {ref.name!r} from {spec.source} cannot be imported: {exc!r}")
        problems += _check_input_chain(mname, method, registry)
    for i, name in enumerate(protocol.evaluation.evaluators):
        if ("evaluator", name) not in registry:
            problems.append(f"evaluation.evaluators.{i}\n    {registry.unknown_message('evaluator', name)}")
    for i, name in enumerate(protocol.reports):
        if ("reporter", name) not in registry:
            problems.append(f"reports.{i}\n    {registry.unknown_message('reporter', name)}")
    if problems:
        raise ProtocolError(f"{origin} is not a valid protocol:\n" + "\n".join(problems))
    return skipped


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
