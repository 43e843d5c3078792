"""Dataset loaders: list, label, validate and hash every image of a data folder.

Supported layouts
-----------------
``paper``
    ``CLASS/0001-1000/CLASS_00001.jpg`` -- the published data set, whose class folders are split
    into sub-folders of 1,000 images.
``flat`` / ``class-folders``
    ``CLASS/*.jpg`` -- one folder per class. Files may sit at any depth below a class folder, so
    this reader also reads the paper layout; the two names only differ in what is reported.
``manifest``
    A CSV file with at least ``path,label`` columns (optional ``sha256``), paths relative to the
    CSV's folder.

Every file is decoded once (in parallel threads; PIL and hashlib release the GIL) so that a
truncated or grey-scale image is found before a run starts and not in fold 4 of method 3.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np

from cytocompare.errors import DataError
from cytocompare.images import BadImageError, ImageSet, decode_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "LoadedDataset",
    "SkippedFile",
    "BUNDLED_PREFIX",
    "bundled_sample_path",
    "is_bundled",
    "load_dataset",
    "resolve_data_path",
]

#: file-name suffixes treated as images (compared case-insensitively)
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})

Layout = Literal["auto", "paper", "flat", "class-folders", "manifest"]
ProgressCallback = Callable[[int, int], None]

#: a data path ``bundled:<name>`` names a sample shipped inside the package, not a folder
BUNDLED_PREFIX = "bundled:"
_MAX_LISTED_BAD = 5
# files per joblib task: large enough that task overhead is negligible, small enough that the
# progress callback moves
_VERIFY_CHUNK = 128


@dataclass(frozen=True)
class SkippedFile:
    """One file left out of the data set, and why."""

    path: str
    cause: str


@dataclass
class LoadedDataset:
    """The result of :func:`load_dataset`.

    Attributes
    ----------
    images : ImageSet
        The usable images, in a sorted, deterministic order, with labels and sha256 hashes.
    skipped : list of SkippedFile
        Bad files (with ``on_bad_file="skip"``) and images excluded by ``label_map``/``classes``.
    layout : str
        The layout read (``paper``, ``flat``, ``class-folders`` or ``manifest``).
    root : Path
        The data folder (the manifest's folder for a manifest).
    class_counts : dict of str to int
        Images per class in ``images`` (a class of an empty class folder counts 0).
    warnings : list of str
        Things a person should know (empty folders, unmapped labels, excluded classes, ...).
    """

    images: ImageSet
    skipped: list[SkippedFile] = field(default_factory=list)
    layout: str = "flat"
    root: Path = Path(".")
    class_counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Entry:
    """A listed file before validation."""

    path: Path
    label: str
    expected_sha256: str | None = None


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def bundled_sample_path(name: str = "matek-bm-sample") -> Path:
    """Folder of a sample data set shipped inside the package.

    Parameters
    ----------
    name : str
        Sample name, e.g. ``"matek-bm-sample"``.

    Returns
    -------
    Path
        ``cytocompare/sample_data/<name>`` (it may not exist in a development checkout).
    """
    return Path(str(resources.files("cytocompare") / "sample_data" / name))


def is_bundled(path: str | Path | None) -> bool:
    """Whether a data path names a bundled sample (``bundled:<name>``) rather than a folder."""
    return isinstance(path, str) and path.startswith(BUNDLED_PREFIX)


def resolve_data_path(path: str, base: str | Path) -> str:
    """A data path made absolute against ``base`` (the protocol's folder, or the working
    directory for a command-line override); a bundled sample's name is left as it is."""
    if is_bundled(path) or Path(path).is_absolute():
        return path
    return str((Path(base) / path).resolve())


def load_dataset(
    path: str | Path,
    *,
    layout: Layout = "auto",
    classes: Iterable[str] | None = None,
    label_map: Mapping[str, str] | None = None,
    label_from: Literal["folder", "prefix"] = "folder",
    image_size: tuple[int, int] | None = None,
    resize: tuple[int, int] | None = None,
    crop: tuple[int, int] | None = None,
    on_bad_file: Literal["stop", "skip"] = "stop",
    verify: bool = True,
    progress: ProgressCallback | None = None,
    n_jobs: int = -1,
) -> LoadedDataset:
    """List, label and validate the images of a data folder or manifest.

    Parameters
    ----------
    path : str or Path
        A data folder, a manifest CSV file, or ``"bundled:<sample name>"``.
    layout : {"auto", "paper", "flat", "class-folders", "manifest"}
        ``auto`` reads ``manifest.csv`` when the folder has one, else the class folders.
    classes : iterable of str, optional
        Keep only these class codes (after ``label_map``); the others are reported as excluded.
    label_map : mapping, optional
        Folder label (or file-name prefix, see ``label_from``) to class code. Images whose
        label is not a key are excluded and reported, never silently dropped.
    label_from : {"folder", "prefix"}
        Take the raw label from the class folder (or the manifest's ``label`` column) or from
        the file-name part before the first ``_`` (``SNE_123.jpg`` -> ``SNE``).
    image_size : (height, width), optional
        Expected size of every file; another size makes the file bad.
    resize : (height, width), optional
        Passed to the :class:`ImageSet`: images are resized when decoded (an external set).
    crop : (height, width), optional
        Passed to the :class:`ImageSet`: the centre is cropped when decoded, before ``resize``.
    on_bad_file : {"stop", "skip"}
        ``stop`` raises :class:`DataError` listing the bad files; ``skip`` lists them in
        ``skipped`` and goes on.
    verify : bool
        Decode every file fully and hash it (and check manifest hashes). ``False`` only lists.
    progress : callable, optional
        Called as ``progress(done, total)`` while files are verified.
    n_jobs : int
        Threads used for verification (``-1``: one per CPU).

    Returns
    -------
    LoadedDataset

    Raises
    ------
    DataError
        Missing folder, empty data set, malformed manifest, or bad files with ``on_bad_file="stop"``.
    """
    if on_bad_file not in ("stop", "skip"):
        raise ValueError(f"on_bad_file must be 'stop' or 'skip', not {on_bad_file!r}")
    if label_from not in ("folder", "prefix"):
        raise ValueError(f"label_from must be 'folder' or 'prefix', not {label_from!r}")
    root, manifest, layout_used = _resolve_source(path, layout)
    warnings: list[str] = []
    if manifest is not None:
        entries = _list_manifest(manifest, root)
        empty_labels: list[str] = []
    else:
        entries, empty_labels, layout_used = _list_class_folders(root, layout_used, warnings)
    if label_from == "prefix":
        entries = [_Entry(e.path, _prefix_label(e.path), e.expected_sha256) for e in entries]

    skipped: list[SkippedFile] = []
    entries, empty_labels = _apply_label_map(entries, empty_labels, label_map, label_from, skipped, warnings)
    wanted = None if classes is None else list(classes)
    entries, empty_labels = _apply_class_filter(entries, empty_labels, wanted, skipped, warnings)
    if not entries:
        raise DataError(f"{root}: no usable images found (layout {layout_used!r}){_why_empty(skipped)}")

    entries.sort(key=lambda e: (e.path.as_posix()))
    hashes = _verify_entries(entries, verify, image_size, on_bad_file, skipped, progress, n_jobs)
    keep = [i for i, h in enumerate(hashes) if h is not None or not verify]
    if not keep:
        first = skipped[0]
        raise DataError(f"{root}: every image file is bad; see the skipped list (first: {first.path}: {first.cause})")
    kept = [entries[i] for i in keep]
    sha = _final_hashes(kept, [hashes[i] for i in keep], verify)
    images = ImageSet([str(e.path) for e in kept], [e.label for e in kept], sha, resize=resize, crop=crop)

    counts = _class_counts(images.labels, empty_labels)
    _warn_empty_classes(counts, warnings)
    if sha is not None:
        _warn_duplicates(sha, warnings)
    return LoadedDataset(images, skipped, layout_used, root, counts, warnings)


# --------------------------------------------------------------------------------------------
# listing
# --------------------------------------------------------------------------------------------


def _resolve_source(path: str | Path, layout: str) -> tuple[Path, Path | None, str]:
    """(root folder, manifest file or None, layout name) for the requested source."""
    if layout not in ("auto", "paper", "flat", "class-folders", "manifest"):
        raise ValueError(f"unknown layout {layout!r}; choose auto, paper, flat, class-folders or manifest")
    if is_bundled(path):
        name = str(path)[len(BUNDLED_PREFIX):] or "matek-bm-sample"
        path = bundled_sample_path(name)
        if not path.is_dir():
            raise DataError(f"bundled sample {name!r} not found at {path}")
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: data folder or manifest not found")
    if path.is_file():
        if path.suffix.lower() != ".csv" or layout not in ("auto", "manifest"):
            raise DataError(f"{path}: a file was given; only a manifest CSV file can be read as a data set")
        return path.parent, path, "manifest"
    if layout == "manifest" or (layout == "auto" and (path / "manifest.csv").is_file()):
        manifest = path / "manifest.csv"
        if not manifest.is_file():
            raise DataError(f"{path}: layout 'manifest' but the folder has no manifest.csv")
        return path, manifest, "manifest"
    return path, None, layout


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _list_class_folders(root: Path, layout: str, warnings: list[str]) -> tuple[list[_Entry], list[str], str]:
    """Entries of every class folder (files at any depth), the empty folders' labels, layout."""
    class_dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))), key=lambda d: d.name
    )
    if not class_dirs:
        raise DataError(f"{root}: no class folders found (expected CLASS/*.jpg or CLASS/0001-1000/*.jpg)")
    stray = [p.name for p in root.iterdir() if p.is_file() and _is_image(p)]
    if stray:
        warnings.append(
            f"{len(stray)} image file(s) directly in {root} ignored (not inside a class folder), e.g. {stray[0]}"
        )
    entries: list[_Entry] = []
    empty: list[str] = []
    nested = False
    other = 0
    for d in class_dirs:
        files, n_other, has_sub = _walk_class_folder(d)
        other += n_other
        nested |= has_sub
        if not files:
            empty.append(d.name)
        entries.extend(_Entry(f, d.name) for f in files)
    if other:
        warnings.append(f"{other} non-image file(s) in class folders ignored (extensions other than "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
    if layout == "auto":
        layout = "paper" if nested else "flat"
    return entries, empty, layout


def _walk_class_folder(folder: Path) -> tuple[list[Path], int, bool]:
    """(image files at any depth, count of other files, whether there are sub-folders)."""
    files: list[Path] = []
    other = 0
    has_sub = False
    # os.walk is much faster than Path.rglob on 170k files
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [n for n in dirnames if not n.startswith(".")]
        if dirnames:
            has_sub = True
        for name in filenames:
            p = Path(dirpath) / name
            if _is_image(p):
                files.append(p)
            elif not name.startswith("."):
                other += 1
    return files, other, has_sub


def _list_manifest(manifest: Path, root: Path) -> list[_Entry]:
    """Entries of a manifest CSV (``path,label`` and optional ``sha256``)."""
    with open(manifest, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = {"path", "label"} - set(columns)
        if missing:
            raise DataError(
                f"{manifest}: manifest lacks column(s) {', '.join(sorted(missing))}; "
                f"found {', '.join(columns) or 'none'}"
            )
        entries: list[_Entry] = []
        seen: dict[str, int] = {}
        for lineno, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not row["path"]:
                raise DataError(f"{manifest}, line {lineno}: empty path")
            if not row["label"]:
                raise DataError(f"{manifest}, line {lineno}: empty label for {row['path']}")
            if row["path"] in seen:
                first_line = seen[row["path"]]
                raise DataError(
                    f"{manifest}, line {lineno}: {row['path']} is listed twice (first on line {first_line})"
                )
            seen[row["path"]] = lineno
            sha = row.get("sha256") or None
            entries.append(_Entry(root / row["path"], row["label"], sha.lower() if sha else None))
    return entries


def _prefix_label(path: Path) -> str:
    """File-name part before the first ``_`` (the whole stem when there is none)."""
    return path.stem.split("_", 1)[0]


# --------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------


def _apply_label_map(
    entries: list[_Entry],
    empty_labels: list[str],
    label_map: Mapping[str, str] | None,
    label_from: str,
    skipped: list[SkippedFile],
    warnings: list[str],
) -> tuple[list[_Entry], list[str]]:
    """Map raw labels to class codes; report (never drop silently) labels without a mapping."""
    if label_map is None:
        return entries, empty_labels
    kept: list[_Entry] = []
    unmapped: Counter[str] = Counter()
    for e in entries:
        if e.label in label_map:
            kept.append(_Entry(e.path, str(label_map[e.label]), e.expected_sha256))
        else:
            unmapped[e.label] += 1
            skipped.append(SkippedFile(str(e.path), f"label {e.label!r} not in label_map"))
    for label, n in sorted(unmapped.items()):
        warnings.append(f"{n} image(s) with {label_from} label {label!r} excluded: not in label_map")
    # an empty folder only has a folder label; it still names a class when the map knows it
    mapped_empty = [str(label_map[x]) for x in empty_labels if x in label_map] if label_from == "folder" else []
    return kept, mapped_empty


def _apply_class_filter(
    entries: list[_Entry],
    empty_labels: list[str],
    classes: list[str] | None,
    skipped: list[SkippedFile],
    warnings: list[str],
) -> tuple[list[_Entry], list[str]]:
    """Keep only ``classes``; report the excluded classes with counts."""
    if classes is None:
        return entries, empty_labels
    wanted = set(classes)
    kept = [e for e in entries if e.label in wanted]
    excluded: Counter[str] = Counter()
    for e in entries:
        if e.label not in wanted:
            excluded[e.label] += 1
            skipped.append(SkippedFile(str(e.path), f"class {e.label!r} not in the selected classes"))
    for label, n in sorted(excluded.items()):
        warnings.append(f"class {label!r} excluded ({n} image(s)): not in the selected classes")
    present = {e.label for e in kept}
    # a selected class with no image at all is worth a warning (a typo, or a missing folder)
    empty = sorted((wanted - present))
    return kept, empty


def _why_empty(skipped: list[SkippedFile]) -> str:
    if not skipped:
        return ""
    causes = Counter(s.cause for s in skipped)
    return "; excluded: " + "; ".join(f"{n} x {c}" for c, n in causes.most_common(5))


def _class_counts(labels: np.ndarray, empty_labels: Iterable[str]) -> dict[str, int]:
    counts = Counter(labels.tolist())
    for label in empty_labels:
        counts.setdefault(label, 0)
    return {k: int(counts[k]) for k in sorted(counts)}


def _warn_empty_classes(counts: Mapping[str, int], warnings: list[str]) -> None:
    for label, n in counts.items():
        if n == 0:
            warnings.append(f"class {label!r} has no images (empty class folder or no file of that class)")


def _warn_duplicates(sha: Sequence[str], warnings: list[str]) -> None:
    """Byte-identical files are legal (the split keeps them together) but worth knowing about."""
    counts = Counter(sha)
    extra = sum(n - 1 for n in counts.values() if n > 1)
    if extra:
        groups = sum(1 for n in counts.values() if n > 1)
        warnings.append(
            f"{extra} byte-identical duplicate file(s) in {groups} group(s); splits keep each group together"
        )


# --------------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------------


def _check_file(
    path: Path, expected_sha: str | None, image_size: tuple[int, int] | None
) -> tuple[str | None, str | None]:
    """(sha256, None) for a good file, (sha256 or None, cause) for a bad one.

    Reads the bytes once and both hashes and decodes them (:func:`cytocompare.images.decode_image`,
    the check every later read makes too), so each file is read from disk once.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "file not found"
    except OSError as exc:
        return None, f"cannot read the file ({exc})"
    if not data:
        return None, "empty file (0 bytes)"
    sha = hashlib.sha256(data).hexdigest()
    if expected_sha is not None and sha != expected_sha:
        return sha, f"sha256 {sha[:12]}... does not match the manifest's {expected_sha[:12]}..."
    try:
        decode_image(data, name=path, expected_size=image_size)
    except BadImageError as exc:
        return sha, exc.cause
    return sha, None


def _check_chunk(
    entries: Sequence[_Entry], image_size: tuple[int, int] | None
) -> list[tuple[str | None, str | None]]:
    return [_check_file(e.path, e.expected_sha256, image_size) for e in entries]


def _verify_entries(
    entries: list[_Entry],
    verify: bool,
    image_size: tuple[int, int] | None,
    on_bad_file: str,
    skipped: list[SkippedFile],
    progress: ProgressCallback | None,
    n_jobs: int,
) -> list[str | None]:
    """sha256 per entry (None for a bad file); bad files are raised or added to ``skipped``."""
    if not verify:
        return [None] * len(entries)
    results = _run_checks(entries, image_size, progress, n_jobs)
    bad = [(e, cause) for e, (_, cause) in zip(entries, results) if cause is not None]
    if bad and on_bad_file == "stop":
        listed = "\n".join(f"  {e.path}: {cause}" for e, cause in bad[:_MAX_LISTED_BAD])
        more = f"\n  ... and {len(bad) - _MAX_LISTED_BAD} more" if len(bad) > _MAX_LISTED_BAD else ""
        raise DataError(
            f"{len(bad)} bad image file(s) of {len(entries)}:\n{listed}{more}\n"
            "fix or remove them, or set on_bad_file: skip to leave them out (they are listed in skipped.csv)"
        )
    skipped.extend(SkippedFile(str(e.path), cause) for e, cause in bad)
    return [sha if cause is None else None for sha, cause in results]


def _run_checks(
    entries: list[_Entry],
    image_size: tuple[int, int] | None,
    progress: ProgressCallback | None,
    n_jobs: int,
) -> list[tuple[str | None, str | None]]:
    """Check every entry in parallel threads, reporting progress as chunks finish."""
    from joblib import Parallel, delayed

    total = len(entries)
    chunks = [entries[i:i + _VERIFY_CHUNK] for i in range(0, total, _VERIFY_CHUNK)]
    results: list[tuple[str | None, str | None]] = []
    if progress is not None:
        progress(0, total)
    # threads, not processes: decoding and hashing release the GIL, and nothing is pickled
    parallel = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")
    for chunk_result in parallel(delayed(_check_chunk)(c, image_size) for c in chunks):
        results.extend(chunk_result)
        if progress is not None:
            progress(len(results), total)
    return results


def _final_hashes(kept: list[_Entry], hashes: list[str | None], verify: bool) -> list[str] | None:
    """Verified hashes; without verification the manifest's, or None (hashed lazily later)."""
    if verify:
        return [h for h in hashes if h is not None]
    if all(e.expected_sha256 for e in kept):
        return [e.expected_sha256 for e in kept]  # type: ignore[misc]
    return None
