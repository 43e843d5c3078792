"""The run directory's file formats: the one place that reads and writes them.

The layout (docs/architecture.md) is the contract between the runner, the evaluators and the
reporters::

    RUN/run.json                                    what was run and how far it got (RunInfo)
    RUN/protocol.yaml                               the resolved protocol
    RUN/plugins.json                                installed plugins and their components
    RUN/dataset.csv, RUN/skipped.csv                the images used, the files left out and why
    RUN/test_dataset.csv, RUN/test_skipped.csv      the same for the external test set
    RUN/test_matching.json                          its scale factor and colour map (cytocompare.matching)
    RUN/splits.csv, RUN/splits.json                 the split plan (cytocompare.splits)
    RUN/predictions/<method>/<split>/fold-<k>.csv   image, path, truth, prediction, score_<CLASS>...
    RUN/predictions/<method>/<split>/fold-<k>.json  written last: marks the fold as complete
    RUN/checkpoints/<method>/<split>/fold<k>/       training state of checkpointing classifiers
    RUN/artifacts/<method>/<split>/                 files a classifier writes (WritesArtifacts)
    RUN/metrics/...                                 evaluators' output (cytocompare.evaluation)
    RUN/error.log                                   the traceback of an unexpected error
    RUN/.lock                                       the running process (cytocompare.locking)

Every write is atomic (temporary file, then :func:`os.replace`) so an interrupted run never
leaves a half-written file that a resumed run would mistake for a finished one; every file is
created with the permissions the umask gives (0644 under the usual 022), like any other file.

:meth:`RunDir.claim` decides, reading only, whether a directory starts afresh or resumes;
the runner writes nothing into it before that and every other check have passed.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cytocompare.datasets import UNMAPPED
from cytocompare.errors import CytocompareError, SplitError
from cytocompare.locking import LOCK_NAME

if TYPE_CHECKING:  # pragma: no cover
    from cytocompare.datasets import LoadedDataset
    from cytocompare.splits import SplitPlan

_FOLD_RE = re.compile(r"^fold-(\d+)\.json$")
#: line ending of the data-set and split CSVs: the csv module's default, which they were first
#: written with (the metrics and prediction CSVs use "\n")
_CSV_DEFAULT_EOL = "\r\n"
#: run.json ``tolerance_source`` values written before it became "scheme" | "protocol" | "none"
_LEGACY_SCHEME_SOURCE = "inferred from Matek et al. 2021 Table 1"


@dataclass
class Predictions:
    """The predictions of one method on one fold of one split."""

    images: np.ndarray  # int indices into the dataset (or the external test set)
    paths: np.ndarray  # str
    truth: np.ndarray  # str labels
    prediction: np.ndarray  # str labels
    scores: np.ndarray | None  # (n, len(classes)) float, or None
    classes: list[str] | None
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, keep: np.ndarray) -> Predictions:
        """The rows where the boolean ``keep`` is true (itself when it keeps every row)."""
        if keep.all():
            return self
        scores = None if self.scores is None else self.scores[keep]
        return Predictions(images=self.images[keep], paths=self.paths[keep], truth=self.truth[keep],
                           prediction=self.prediction[keep], scores=scores, classes=self.classes, info=self.info)


ToleranceSource = Literal["scheme", "protocol", "none"]


@dataclass
class RunInfo:
    """run.json: what a run is, and how far it got. The one statement of its keys.

    The runner fills one in (:meth:`RunDir.write_run_info`) when the data and the split plan are
    known, and again when every fold is done; evaluators and reporters read it through the
    accessors of :class:`RunDir` (``labels()``, ``splits()``, ``tolerated_pairs()``, ...).
    """

    #: "running" while folds are being computed, "finished" once every fold is done, "failed"
    #: when the run stopped on an error, "interrupted" after Ctrl-C (``error`` says why)
    status: Literal["running", "finished", "failed", "interrupted"]
    #: the protocol's ``name``
    protocol_name: str
    #: :meth:`cytocompare.config.Protocol.digest`: the directory resumes only under the same one
    protocol_hash: str
    #: class codes of the run in display order (the scheme's order first)
    labels: list[str]
    #: class code -> display name, for the codes the class scheme knows
    class_names: dict[str, str]
    #: training images per label
    class_counts: dict[str, int]
    #: the adjacent-class pairs whose mix-up the tolerant metrics forgive, each sorted
    tolerated_pairs: list[list[str]]
    #: where the pairs come from: the class scheme's default ("scheme"; Matek et al. 2021 never
    #: lists them, they are inferred from its Table 1), the protocol's own list, or none at all
    tolerance_source: ToleranceSource
    #: classes a method may answer with instead of a real call (excluded from some metrics)
    no_call_classes: list[str]
    #: method -> {"splits": [split names], "components": {part: {"name", "params"} or None}}
    methods: dict[str, dict[str, Any]]
    #: split -> the protocol's split spec plus ``n_folds``
    splits: dict[str, dict[str, Any]]
    #: evaluator and reporter names the evaluation runs (cytocompare.evaluation)
    evaluators: list[str]
    reporters: list[str]
    #: the data folders actually read (resolved paths, or "bundled:<name>"); named test sets by name
    data: str
    test_data: str | dict[str, str] | None
    #: {"cytocompare": version, "python": version}
    versions: dict[str, str]
    #: why the run stopped (status "failed" or "interrupted"): {"type", "message", "traceback"
    #: (the file holding it, or null), "at" (UTC)}; null while running and once finished
    error: dict[str, Any] | None = None


RunStatus = Literal["running", "finished", "failed", "interrupted"]

#: the files cytocompare writes into a run directory before its first fold: a folder holding
#: nothing else (an earlier start that stopped on bad files or was interrupted) may start afresh
EARLY_FILES = frozenset({
    "run.json", "protocol.yaml", "plugins.json", "dataset.csv", "skipped.csv", "test_dataset.csv",
    "test_skipped.csv", "splits.csv", "splits.json", "error.log", "feature_failures.csv",
    "test_feature_failures.csv", "near_duplicates.csv", "test_near_duplicates.csv", "test_matching.json",
})
#: the files of a named test set ``test_<name>_<file>`` (cytocompare.config.test_file_prefix)
_TEST_SET_FILES = ("dataset.csv", "skipped.csv", "near_duplicates.csv", "matching.json")


def is_early_file(name: str) -> bool:
    """One of :data:`EARLY_FILES`, or a named test set's version of one (``test_pbc_dataset.csv``)."""
    return name in EARLY_FILES or (name.startswith("test_") and name.endswith(_TEST_SET_FILES))


def is_scratch_name(name: str) -> bool:
    """The lock file and the temporary files of atomic writes (left by a killed process)."""
    return name == LOCK_NAME or (name.startswith(LOCK_NAME + ".") and name.endswith(".tmp")) or (
        name.startswith(".") and name.endswith(".tmp"))


@dataclass(frozen=True)
class Claim:
    """What :meth:`RunDir.claim` decided: ``"new"`` (nothing there), ``"restart"`` (only what an
    earlier start left, no result: start afresh) or ``"resume"`` (a run of the same protocol)."""

    mode: Literal["new", "restart", "resume"]
    why: str = ""

    @property
    def resume(self) -> bool:
        return self.mode == "resume"


def _umask() -> int:
    """The process's umask, read without changing it where /proc says it (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def _atomic_write_text(path: Path, text: str) -> None:
    """The one writer of the run directory's files: a temporary file in the same folder, then
    :func:`os.replace`; the file gets the mode a plain ``open`` would give it (0666 less the
    umask), not mkstemp's private 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())
        except (AttributeError, OSError):  # pragma: no cover - no fchmod (Windows)
            pass
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_default(obj: Any) -> Any:
    """What ``json.dumps`` writes for a value JSON has no type for (every JSON file of a run).

    numpy scalars and arrays become numbers and lists, sets sorted lists, paths strings; anything
    else (an estimator in a fit report) is recorded by its ``repr``, so that a record is never lost
    to a type JSON lacks.
    """
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def utc_now() -> str:
    """The time stamps of run.json and of the fold files: UTC, ISO 8601, whole seconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _read_text_raw(path: Path) -> str:
    """A text file with its line endings as written (the csv module reads "\r\n" itself)."""
    with open(path, encoding="utf-8", newline="") as fh:
        return fh.read()


def _json_text(obj: Any, *, sort_keys: bool = True) -> str:
    return json.dumps(_clean_nan(obj), indent=2, sort_keys=sort_keys, default=json_default)


def _clean_nan(obj: Any) -> Any:
    """JSON has no NaN: write ``null`` instead (readers get ``None``)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_nan(v) for v in obj]
    return obj


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return "" if not math.isfinite(float(value)) else repr(float(value))
    return value


class RunDir:
    """Reads and writes the files of one run directory.

    Parameters
    ----------
    path
        The run directory (created on the first write).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------ predictions
    def prediction_path(self, method: str, split: str, fold: int) -> Path:
        """``predictions/<method>/<split>/fold-<k>.csv``."""
        return self.path / "predictions" / method / split / f"fold-{int(fold)}.csv"

    def _info_path(self, method: str, split: str, fold: int) -> Path:
        return self.prediction_path(method, split, fold).with_suffix(".json")

    def has_predictions(self, method: str, split: str, fold: int) -> bool:
        """True when the fold's CSV and its JSON (written last: the completion marker) exist."""
        return self.prediction_path(method, split, fold).is_file() and self._info_path(method, split, fold).is_file()

    def write_predictions(
        self,
        method: str,
        split: str,
        fold: int,
        *,
        images: Sequence[int] | np.ndarray,
        paths: Sequence[str] | np.ndarray,
        truth: Sequence[str] | np.ndarray,
        prediction: Sequence[str] | np.ndarray,
        scores: np.ndarray | None = None,
        classes: Sequence[str] | None = None,
        info: dict | None = None,
    ) -> None:
        """Write one fold's predictions (CSV) and then its info (JSON), each atomically."""
        images = np.asarray(images)
        n = len(images)
        for name, arr in (("paths", paths), ("truth", truth), ("prediction", prediction)):
            if len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} entries, images has {n}")
        score_arr = None
        if scores is not None:
            if classes is None:
                raise ValueError("scores need the list of classes naming their columns")
            score_arr = np.asarray(scores, dtype=float)
            if score_arr.shape != (n, len(classes)):
                raise ValueError(f"scores have shape {score_arr.shape}, expected {(n, len(classes))}")
        marker = self._info_path(method, split, fold)
        # the fold is incomplete while it is being rewritten
        if marker.exists():
            marker.unlink()
        header = ["image", "path", "truth", "prediction"]
        if score_arr is not None:
            header += [f"score_{c}" for c in classes]  # type: ignore[union-attr]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        for i in range(n):
            row: list[Any] = [int(images[i]), str(paths[i]), str(truth[i]), str(prediction[i])]
            if score_arr is not None:
                row += [repr(float(v)) for v in score_arr[i]]
            w.writerow(row)
        _atomic_write_text(self.prediction_path(method, split, fold), buf.getvalue())
        meta = dict(info or {})
        if classes is not None:
            meta.setdefault("classes", list(classes))
        _atomic_write_text(marker, _json_text(meta))

    def read_predictions(self, method: str, split: str, fold: int, *, unmapped: bool = False) -> Predictions:
        """Read one fold's predictions (``FileNotFoundError`` if incomplete).

        External images kept without a class (``test_data.unmapped: predict``; truth
        :data:`cytocompare.datasets.UNMAPPED`) are left out, so that no metric scores them,
        unless ``unmapped``: the external confusion matrix shows them under their own label.
        """
        if not self.has_predictions(method, split, fold):
            raise FileNotFoundError(f"no complete predictions for {method}/{split}/fold-{fold} in {self.path}")
        csv_path = self.prediction_path(method, split, fold)
        with open(csv_path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            rows = list(reader)
        info = json.loads(self._info_path(method, split, fold).read_text(encoding="utf-8"))
        score_cols = [i for i, h in enumerate(header) if h.startswith("score_")]
        col = {h: i for i, h in enumerate(header)}
        images = np.array([int(r[col["image"]]) for r in rows], dtype=np.int64)
        paths = np.array([r[col["path"]] for r in rows], dtype=object).astype(str) if rows else np.array([], dtype=str)
        truth = np.array([r[col["truth"]] for r in rows], dtype=str) if rows else np.array([], dtype=str)
        pred = np.array([r[col["prediction"]] for r in rows], dtype=str) if rows else np.array([], dtype=str)
        scores = None
        classes: list[str] | None = info.get("classes")
        if score_cols:
            classes = [header[i][len("score_"):] for i in score_cols]
            scores = np.array([[float(r[i]) if r[i] != "" else np.nan for i in score_cols] for r in rows], dtype=float)
            scores = scores.reshape(len(rows), len(score_cols))
        out = Predictions(images=images, paths=paths, truth=truth, prediction=pred, scores=scores,
                          classes=classes, info=info)
        return out if unmapped else out.subset(truth != UNMAPPED)

    def completed(self) -> list[tuple[str, str, int]]:
        """Every (method, split, fold) with complete predictions, sorted."""
        root = self.path / "predictions"
        out: list[tuple[str, str, int]] = []
        if not root.is_dir():
            return out
        for method_dir in root.iterdir():
            if not method_dir.is_dir():
                continue
            for split_dir in method_dir.iterdir():
                if not split_dir.is_dir():
                    continue
                for f in split_dir.iterdir():
                    m = _FOLD_RE.match(f.name)
                    if m and f.with_suffix(".csv").is_file():
                        out.append((method_dir.name, split_dir.name, int(m.group(1))))
        return sorted(out)

    # ------------------------------------------------------------------ generic files
    def write_json(self, relpath: str, obj: Any) -> Path:
        """Write ``obj`` as JSON (indent 2, sorted keys, NaN as null), atomically."""
        path = self.path / relpath
        _atomic_write_text(path, _json_text(obj) + "\n")
        return path

    def read_json(self, relpath: str) -> Any:
        return json.loads((self.path / relpath).read_text(encoding="utf-8"))

    def write_csv(self, relpath: str, header: list[str], rows: Iterable[Sequence[Any]], *,
                  lineterminator: str = "\n") -> Path:
        """Write a CSV atomically; non-finite floats become empty cells."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator=lineterminator)
        w.writerow(header)
        for row in rows:
            w.writerow([_csv_cell(v) for v in row])
        path = self.path / relpath
        _atomic_write_text(path, buf.getvalue())
        return path

    def read_csv(self, relpath: str) -> list[dict[str, str]]:
        with open(self.path / relpath, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    def write_text(self, relpath: str, text: str) -> Path:
        """Write a text file (Markdown, HTML) atomically."""
        path = self.path / relpath
        _atomic_write_text(path, text)
        return path

    # ------------------------------------------------------------------ folders components write into
    def checkpoint_dir(self, method: str, split: str, fold: int) -> Path:
        """``checkpoints/<method>/<split>/fold<k>``: training state of a checkpointing classifier."""
        return self.path / "checkpoints" / method / split / f"fold{int(fold)}"

    def artifacts_dir(self, method: str, split: str) -> Path:
        """``artifacts/<method>/<split>``: the files a classifier writes (saliency maps, UMAP)."""
        return self.path / "artifacts" / method / split

    # ------------------------------------------------------------------ starting a run
    def has_results(self) -> bool:
        """Whether anything of value is here: a finished fold, or a checkpoint of one in progress."""
        if self.completed():
            return True
        ckpt = self.path / "checkpoints"
        return ckpt.is_dir() and any(p.is_file() for p in ckpt.rglob("*"))

    def read_protocol(self) -> dict[str, Any] | None:
        """``protocol.yaml`` as a dict, or None when it is missing or unreadable."""
        import yaml

        try:
            data = yaml.safe_load((self.path / "protocol.yaml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None
        return data if isinstance(data, dict) else None

    def claim(self, protocol_hash: str,
              changed_keys: Callable[[dict[str, Any] | None], list[str]] | None = None) -> Claim:
        """Decide, reading only, how a run of the protocol with this digest may use the directory.

        * missing or empty (the lock and temporary files aside): ``"new"``;
        * holding only :data:`EARLY_FILES`, or a ``run.json`` but no result (no finished fold, no
          checkpoint): ``"restart"`` -- an earlier start that failed or was interrupted, whatever
          its protocol; nothing of value is lost by starting afresh;
        * a run with results of the same protocol: ``"resume"``; of another protocol: refused,
          naming the keys that changed (``changed_keys(stored protocol.yaml)``; a digest that differs
          while no result-relevant key does, as after an upgrade of the digest, resumes too);
        * anything else: refused ("not a cytocompare run directory").
        """
        if not self.path.exists():
            return Claim("new")
        if not self.path.is_dir():
            raise CytocompareError(f"{self.path} is a file, not a folder; choose another --output directory")
        entries = sorted(p.name for p in self.path.iterdir() if not is_scratch_name(p.name))
        if not entries:
            return Claim("new")
        if not (self.path / "run.json").is_file():
            foreign = [n for n in entries if not is_early_file(n)]
            if foreign:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                raise CytocompareError(f"{self.path} is not empty and is not a cytocompare run directory "
                                       f"(it holds {shown}); choose another --output directory")
            return Claim("restart", "it holds only the files of an earlier start that stopped before any fold")
        try:
            info = self.info
        except (ValueError, UnicodeDecodeError) as exc:
            raise CytocompareError(f"{self.path / 'run.json'} cannot be read ({exc}); it is not a run "
                                   "cytocompare can resume: choose another --output directory") from None
        if not self.has_results():
            return Claim("restart", f"the earlier run (status {info.get('status', '?')}) left no finished fold")
        if info.get("protocol_hash") == protocol_hash:
            return Claim("resume")
        changed = changed_keys(self.read_protocol()) if changed_keys is not None else ["(unknown)"]
        if not changed:
            return Claim("resume", "no result-relevant key of the protocol changed")
        shown = "; ".join(changed[:10]) + (f"; and {len(changed) - 10} more" if len(changed) > 10 else "")
        raise CytocompareError(
            f"{self.path} holds a run of a different protocol (hash {info.get('protocol_hash')}, now "
            f"{protocol_hash}); changed: {shown}. Change them back to resume, or choose another "
            "--output directory so that no finished work is lost"
        )

    def clear_early_files(self) -> None:
        """Remove what an earlier start left (:data:`EARLY_FILES`), before starting afresh."""
        for name in sorted(EARLY_FILES):
            (self.path / name).unlink(missing_ok=True)
        for path in self.path.glob("test_*"):
            if path.is_file() and is_early_file(path.name):
                path.unlink(missing_ok=True)

    def write_error_log(self, text: str) -> Path:
        """``error.log``: the full traceback of an unexpected error."""
        return self.write_text("error.log", text)

    def record_stop(self, status: RunStatus, error: dict[str, Any], *, protocol_name: str,
                    protocol_hash: str) -> Path:
        """Mark run.json ``failed`` or ``interrupted`` with the cause (``error``) and the protocol of
        the run that stopped, keeping every other key; a run that failed before its first
        ``run.json`` gets a minimal one."""
        try:
            record = self.info
        except ValueError:  # an unreadable run.json: replaced by the record of this stop
            record = {}
        record["protocol_name"] = protocol_name
        record["protocol_hash"] = protocol_hash
        record.setdefault("started", utc_now())
        record["status"] = status
        record["error"] = dict(error) | {"at": utc_now()}
        return self.write_json("run.json", record)

    def write_protocol(self, resolved: dict[str, Any]) -> Path:
        """``protocol.yaml``: the resolved protocol (every default filled in), keys in model order."""
        import yaml

        return self.write_text("protocol.yaml", yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))

    def write_plugins(self, plugins: dict[str, Any]) -> Path:
        """``plugins.json``: the installed plugins, their versions and components."""
        return self.write_json("plugins.json", plugins)

    def write_dataset(self, loaded: LoadedDataset, prefix: str = "") -> list[Path]:
        """``<prefix>dataset.csv`` (``index,path,label,sha256`` per image used) and
        ``<prefix>skipped.csv`` (``path,cause`` per file left out; only the header when none was).

        ``prefix`` is ``""`` for the training set and ``"test_"`` for an external test set, whose
        CSV has a fifth column, ``source_label``: the image's own label before ``label_map`` (the
        rows of the external confusion matrix); ``label`` is empty for an image kept unmapped.
        """
        images = loaded.images
        sha = images.sha256
        header = ["index", "path", "label", "sha256"]
        rows: Iterable[list[Any]] = ([i, images.paths[i], images.labels[i], sha[i]] for i in range(len(images)))
        if prefix and loaded.source_labels is not None:
            header.append("source_label")
            source = loaded.source_labels
            rows = ([i, images.paths[i], images.labels[i], sha[i], source[i]] for i in range(len(images)))
        return [
            self.write_csv(f"{prefix}dataset.csv", header, rows, lineterminator=_CSV_DEFAULT_EOL),
            self.write_skipped(loaded.skipped, prefix),
        ]

    def test_file_prefix(self, split: str) -> str:
        """The file prefix of the test set an external split tested on (run.json ``splits``)."""
        from cytocompare.config import test_file_prefix

        return test_file_prefix(self.splits().get(split, {}).get("test_set") or "")

    def test_source_labels(self, prefix: str = "test_") -> tuple[np.ndarray, np.ndarray] | None:
        """(class code, own label) of every external test image by index, from
        ``<prefix>dataset.csv``; the code is :data:`~cytocompare.datasets.UNMAPPED` for an image
        kept unmapped. None when the file is missing or has no ``source_label`` column."""
        path = self.path / f"{prefix}dataset.csv"
        if not path.is_file():
            return None
        rows = self.read_csv(f"{prefix}dataset.csv")
        if not rows or "source_label" not in rows[0]:
            return None
        n = max(int(r["index"]) for r in rows) + 1
        code = np.full(n, UNMAPPED, dtype=object)
        own = np.full(n, "", dtype=object)
        for r in rows:
            code[int(r["index"])], own[int(r["index"])] = r["label"], r["source_label"]
        return code.astype(str), own.astype(str)

    def write_test_matching(self, matching: dict[str, Any], prefix: str = "test_") -> Path:
        """``test_matching.json``: how the external test set was matched to the training set (its
        scale factor, the red-cell sizes it came from, the colour map's parameters:
        :meth:`cytocompare.matching.TestMatching.to_dict`)."""
        return self.write_json(f"{prefix}matching.json", matching)

    def write_skipped(self, skipped: Iterable[Any], prefix: str = "") -> Path:
        """``<prefix>skipped.csv`` alone (``path,cause``): also written when a run stops on bad
        files (``on_bad_file: stop``), so that every one of them is named."""
        return self.write_csv(f"{prefix}skipped.csv", ["path", "cause"], ([f.path, f.cause] for f in skipped),
                              lineterminator=_CSV_DEFAULT_EOL)

    def write_near_duplicates(self, header: list[str], rows: Iterable[Sequence[Any]], prefix: str = "") -> Path:
        """``near_duplicates.csv``: the groups of near-identical images that the split plan kept
        together (one row per image; only the header when there is none); ``test_near_duplicates.csv``:
        near-identical pairs of a training and an external test image."""
        return self.write_csv(f"{prefix}near_duplicates.csv", header, rows)

    # ------------------------------------------------------------------ the split plan
    def has_split_plan(self) -> bool:
        return (self.path / "splits.json").is_file()

    def write_split_plan(self, plan: SplitPlan, paths: Sequence[str] | np.ndarray,
                         labels: Sequence[str] | np.ndarray) -> list[Path]:
        """``splits.csv`` (one train/test/- column per fold) and then ``splits.json`` (the specs,
        per-fold counts and the plan hash), each atomically."""
        header, rows = plan.csv_table(paths, labels)
        return [
            self.write_csv("splits.csv", header, rows, lineterminator=_CSV_DEFAULT_EOL),
            self.write_text("splits.json", plan.to_json_text()),
        ]

    def read_split_plan(self, **current: Any) -> SplitPlan:
        """The stored split plan; ``current`` (``labels``, ``sha256``, ``external_labels``) as in
        :meth:`cytocompare.splits.SplitPlan.from_text` (a changed data set raises SplitError)."""
        from cytocompare.splits import SplitPlan

        json_path, csv_path = self.path / "splits.json", self.path / "splits.csv"
        for p in (json_path, csv_path):
            if not p.is_file():
                raise SplitError(f"{p}: split plan file not found")
        return SplitPlan.from_text(
            json_path.read_text(encoding="utf-8"), _read_text_raw(csv_path),
            json_name=str(json_path), csv_name=str(csv_path), **current,
        )

    # ------------------------------------------------------------------ run.json
    def write_run_info(self, info: RunInfo) -> Path:
        """Write run.json from ``info``, atomically.

        ``methods`` is merged with those recorded before, so that a later ``--only`` run does not
        hide methods run before it; ``started`` is kept from the first write; ``finished`` is
        stamped when ``info.status`` is "finished"; the ``error`` of an earlier stop is replaced.
        """
        record = self.info
        fields = asdict(info)
        fields["methods"] = record.get("methods", {}) | fields["methods"]
        record.update(fields)
        record.setdefault("started", utc_now())
        if info.status == "finished":
            record["finished"] = utc_now()
        return self.write_json("run.json", record)

    @property
    def info(self) -> dict:
        """The contents of run.json (empty dict if it does not exist yet)."""
        p = self.path / "run.json"
        if not p.is_file():
            return {}
        return json.loads(p.read_text(encoding="utf-8"))

    def labels(self) -> list[str]:
        """Class codes of the run in display order (from run.json, else from the predictions)."""
        labels = self.info.get("labels")
        if labels:
            return list(labels)
        seen: set[str] = set()
        for m, s, k in self.completed():
            seen.update(self.read_predictions(m, s, k).truth.tolist())
        return sorted(seen)

    def methods(self) -> list[str]:
        """Method names in run.json order, then any others with predictions on disk."""
        names = list(self.info.get("methods", {}))
        for m, _, _ in self.completed():
            if m not in names:
                names.append(m)
        return names

    def splits(self) -> dict[str, dict]:
        """Split name -> split description (kind, n_folds, ...) from run.json.

        Splits found only on disk get ``{"kind": "kfold" or "holdout", "n_folds": ...}`` guessed
        from the folds present.
        """
        splits = {k: dict(v) for k, v in self.info.get("splits", {}).items()}
        folds: dict[str, set[int]] = {}
        for _, s, k in self.completed():
            folds.setdefault(s, set()).add(k)
        for s, ks in folds.items():
            if s not in splits:
                n = max(ks) + 1
                splits[s] = {"kind": "kfold" if n > 1 else "holdout", "n_folds": n}
        for s in splits.values():
            s.setdefault("n_folds", 1)
            s.setdefault("kind", "holdout")
        return splits

    def scheme_names(self) -> dict[str, str]:
        """Class code -> display name, from run.json ``class_names`` (the code where missing)."""
        names = dict(self.info.get("class_names", {}))
        return {c: names.get(c, c) for c in dict.fromkeys(self.labels() + list(names))}

    def tolerated_pairs(self) -> list[list[str]]:
        return [list(p) for p in self.info.get("tolerated_pairs", [])]

    def no_call_classes(self) -> list[str]:
        return list(self.info.get("no_call_classes", []))

    def tolerance_source(self) -> ToleranceSource:
        """Where the tolerated pairs come from: "scheme" (the class scheme's default, for Matek
        et al. 2021 inferred from its Table 1), "protocol" (the protocol's own list) or "none".

        Runs recorded before it wrote a sentence for "scheme" (read as "scheme") and "protocol"
        for ``none`` too; a run.json without the key reads as "protocol", or "none" without pairs.
        """
        source = self.info.get("tolerance_source")
        if source in ("scheme", "protocol", "none"):
            return source  # type: ignore[return-value]
        if source == _LEGACY_SCHEME_SOURCE:
            return "scheme"
        return "protocol" if self.tolerated_pairs() else "none"
