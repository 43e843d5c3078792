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
    CSV's folder. An absolute path, or a ``..`` path that leaves the CSV's folder, is refused
    (``allow_outside_paths`` allows both); the check is on the written path, so a symbolic link
    inside the folder is followed as usual.

Nothing is dropped without its name: a bad file, an unmapped or excluded label, a refused
manifest path and every file the listing does not read (a non-image file name, a hidden file or
folder, a broken or folder link, a file outside any class folder) is a :class:`SkippedFile` with
its cause; the causes of files that were not read start with ``"ignored: "``.

Every file is decoded once (in parallel threads; PIL and hashlib release the GIL) so that a
truncated or grey-scale image is found before a run starts and not in fold 4 of method 3.
"""

from __future__ import annotations

import csv
import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np

from cytocompare.errors import DataError
from cytocompare.images import BadImageError, ImageSet, check_image

__all__ = [
    "IGNORED",
    "IMAGE_EXTENSIONS",
    "UNMAPPED",
    "BadFilesError",
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

#: the cause of every file the listing does not read starts with this (then the reason)
IGNORED = "ignored"

#: the class label of an external image whose own label has no entry in ``label_map`` and that
#: is kept (``unmapped="predict"``): it is predicted and shown under its own label in the external
#: confusion matrix (its ``source_label``), and left out of every metric, as it has no true code
UNMAPPED = ""


class BadFilesError(DataError):
    """Stop mode found bad files (or refused manifest paths).

    ``skipped`` holds every file left out so far with its cause (the bad ones included), so that
    the caller can still write ``skipped.csv`` before stopping; ``bad`` holds the bad ones only.
    """

    def __init__(self, message: str, *, skipped: list[SkippedFile], bad: list[SkippedFile]) -> None:
        super().__init__(message)
        self.skipped = skipped
        self.bad = bad


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
    perceptual_hashes : numpy.ndarray or None
        With ``perceptual_hashes=True``: an ``(n, 2)`` uint64 array, the
        :func:`cytocompare.near_duplicates.perceptual_hash` of every image of ``images`` (computed
        from the decoded file during the check); else None.
    perceptual_hash_seconds : float
        CPU seconds spent on those hashes (summed over the threads), to show what they cost.
    source_labels : numpy.ndarray
        Every image's own label before ``label_map`` (its folder name or file-name prefix), parallel
        to ``images``: the rows of the external confusion matrix in the test set's own scheme.
    n_unmapped : int
        Images kept with the label :data:`UNMAPPED` (``unmapped="predict"``).
    check_seconds : float
        Wall-clock seconds of the whole check (reading, hashing, decoding).
    """

    images: ImageSet
    skipped: list[SkippedFile] = field(default_factory=list)
    layout: str = "flat"
    root: Path = Path(".")
    class_counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    perceptual_hashes: np.ndarray | None = None
    perceptual_hash_seconds: float = 0.0
    check_seconds: float = 0.0
    source_labels: np.ndarray | None = None
    n_unmapped: int = 0


@dataclass(slots=True)
class _Entry:
    """A listed file before validation (its path as a string: 171,374 Path objects cost more
    than the listing itself)."""

    path: str
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
    scale: float | None = None,
    on_bad_file: Literal["stop", "skip"] = "stop",
    verify: bool = True,
    progress: ProgressCallback | None = None,
    n_jobs: int = -1,
    allow_outside_paths: bool = False,
    perceptual_hashes: bool = False,
    unmapped: Literal["skip", "predict"] = "skip",
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
        Folder label (or file-name prefix, see ``label_from``) to class code, many-to-one
        allowed. Images whose label is not a key are excluded and reported, never silently
        dropped, unless ``unmapped="predict"``.
    label_from : {"folder", "prefix"}
        Take the raw label from the class folder (or the manifest's ``label`` column) or from
        the file-name part before the first ``_`` (``SNE_123.jpg`` -> ``SNE``).
    image_size : (height, width), optional
        Expected size of every file; another size makes the file bad.
    resize : (height, width), optional
        Passed to the :class:`ImageSet`: images are resized when decoded (an external set).
    crop : (height, width), optional
        Passed to the :class:`ImageSet`: the centre is cropped when decoded, before ``resize``.
    scale : float, optional
        Passed to the :class:`ImageSet`: the whole image is rescaled by it when decoded, before ``crop``.
    on_bad_file : {"stop", "skip"}
        ``stop`` raises :class:`BadFilesError` listing the bad files (and refused manifest
        paths); ``skip`` lists them in ``skipped`` and goes on.
    verify : bool
        Decode every file fully and hash it (and check manifest hashes). ``False`` only lists.
    progress : callable, optional
        Called as ``progress(done, total)`` while files are verified.
    n_jobs : int
        Threads used for verification (``-1``: one per CPU).
    allow_outside_paths : bool
        Manifest only: accept absolute paths and ``..`` paths that leave the manifest's folder.
        By default each is refused: in ``skipped`` with its cause, or an error in stop mode.
    perceptual_hashes : bool
        Also compute the perceptual hash of every good image while it is decoded for the check
        (for near-duplicate groups, :mod:`cytocompare.near_duplicates`); needs ``verify``.
    unmapped : {"skip", "predict"}
        Images whose label is not a key of ``label_map``: ``skip`` leaves them out (listed in
        ``skipped``); ``predict`` keeps them with the label :data:`UNMAPPED` (an external set's
        classes the model never learnt: predicted and shown, never scored). Needs ``label_map``.

    Returns
    -------
    LoadedDataset

    Raises
    ------
    DataError
        Missing folder, empty data set, malformed manifest; :class:`BadFilesError` for bad files
        with ``on_bad_file="stop"``.
    """
    if on_bad_file not in ("stop", "skip"):
        raise ValueError(f"on_bad_file must be 'stop' or 'skip', not {on_bad_file!r}")
    if label_from not in ("folder", "prefix"):
        raise ValueError(f"label_from must be 'folder' or 'prefix', not {label_from!r}")
    if unmapped not in ("skip", "predict"):
        raise ValueError(f"unmapped must be 'skip' or 'predict', not {unmapped!r}")
    if unmapped == "predict" and label_map is None:
        raise ValueError("unmapped='predict' needs a label_map (without one every label is used as it is)")
    if perceptual_hashes and not verify:
        raise ValueError("perceptual_hashes needs verify=True (the hashes are computed while each file is checked)")
    started = time.perf_counter()
    root, manifest, layout_used = _resolve_source(path, layout)
    warnings: list[str] = []
    skipped: list[SkippedFile] = []
    refused: list[SkippedFile] = []  # bad before being read: manifest paths outside its folder
    if manifest is not None:
        entries = _list_manifest(manifest, root, allow_outside_paths, refused)
        empty_labels: list[str] = []
    else:
        entries, empty_labels, layout_used = _list_class_folders(root, layout_used, warnings, skipped)
    if label_from == "prefix":
        entries = [_Entry(e.path, _prefix_label(e.path), e.expected_sha256) for e in entries]
    source_of = {e.path: e.label for e in entries}

    entries, empty_labels = _apply_label_map(entries, empty_labels, label_map, label_from, skipped, warnings,
                                             keep_unmapped=unmapped == "predict")
    wanted = None if classes is None else list(classes)
    entries, empty_labels = _apply_class_filter(entries, empty_labels, wanted, skipped, warnings)
    # stop mode: refused paths are bad files, reported in one error with the bad files found
    pending = refused if on_bad_file == "stop" else []
    if on_bad_file == "skip":
        skipped.extend(refused)
    if pending and (not entries or not verify):
        _raise_bad(pending, len(entries) + len(pending), skipped)
    if not entries:
        raise DataError(f"{root}: no usable images found (layout {layout_used!r}){_why_empty(skipped)}")

    # the order of Path.as_posix(), on every platform
    entries.sort(key=(lambda e: e.path) if os.sep == "/" else (lambda e: e.path.replace(os.sep, "/")))
    checks = _verify_entries(entries, verify, image_size, on_bad_file, skipped, progress, n_jobs,
                             perceptual_hashes, pending)
    hashes = checks.sha
    keep = [i for i, h in enumerate(hashes) if h is not None or not verify]
    if not keep:
        first = next(s for s in skipped if not s.cause.startswith(IGNORED))
        raise DataError(f"{root}: every image file is bad; see the skipped list (first: {first.path}: {first.cause})")
    kept = [entries[i] for i in keep]
    sha = _final_hashes(kept, [hashes[i] for i in keep], verify)
    images = ImageSet([e.path for e in kept], [e.label for e in kept], sha, resize=resize, crop=crop, scale=scale)
    source_labels = np.asarray([source_of[e.path] for e in kept], dtype=object).astype(str)

    counts = _class_counts(images.labels[images.labels != UNMAPPED], empty_labels)
    _warn_empty_classes(counts, warnings)
    if sha is not None:
        _warn_duplicates(sha, warnings)
    phashes = None
    if perceptual_hashes and checks.phash is not None:
        phashes = checks.phash[np.asarray(keep, dtype=np.int64)]
    return LoadedDataset(
        images, skipped, layout_used, root, counts, warnings, perceptual_hashes=phashes,
        perceptual_hash_seconds=checks.phash_seconds,
        check_seconds=time.perf_counter() - started,
        source_labels=source_labels, n_unmapped=int(np.sum(images.labels == UNMAPPED)),
    )


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


# causes of files the listing does not read (each starts with IGNORED)
_IGNORED_HIDDEN_FILE = f"{IGNORED}: hidden file (name starts with '.')"
_IGNORED_HIDDEN_FOLDER = f"{IGNORED}: hidden folder (name starts with '.'); {{n}} file(s) in it not read"
_IGNORED_BROKEN_LINK = f"{IGNORED}: broken symbolic link (its target does not exist)"
_IGNORED_FOLDER_LINK = f"{IGNORED}: symbolic link to a folder below a class folder (not followed)"
_IGNORED_OUTSIDE_CLASS = f"{IGNORED}: not inside a class folder"
_IGNORED_UNDERSCORE = f"{IGNORED}: in a folder whose name starts with '_' (not a class folder)"


def _ignored_not_image(path: Path) -> str:
    suffix = path.suffix or "no extension"
    return f"{IGNORED}: not an image file name ({suffix}; images are {', '.join(sorted(IMAGE_EXTENSIONS))})"


def _is_broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def _list_class_folders(
    root: Path, layout: str, warnings: list[str], skipped: list[SkippedFile]
) -> tuple[list[_Entry], list[str], str]:
    """Entries of every class folder (files at any depth), the empty folders' labels, layout.

    Every file that is not read is added to ``skipped`` with an ``ignored: ...`` cause (a hidden
    folder is one row, with the number of files in it)."""
    top = sorted(root.iterdir(), key=lambda p: p.name)
    class_dirs = [d for d in top if d.is_dir() and not d.name.startswith((".", "_"))]
    if not class_dirs:
        raise DataError(f"{root}: no class folders found (expected CLASS/*.jpg or CLASS/0001-1000/*.jpg)")
    ignored: list[SkippedFile] = []
    stray: list[str] = []
    for p in top:
        if p.name.startswith("."):
            cause = (_IGNORED_HIDDEN_FOLDER.format(n=_count_files(p)) if p.is_dir() and not p.is_symlink()
                     else _IGNORED_HIDDEN_FILE)
            ignored.append(SkippedFile(str(p), cause))
        elif _is_broken_link(p):
            ignored.append(SkippedFile(str(p), _IGNORED_BROKEN_LINK))
        elif p.is_dir() and p.name.startswith("_"):
            files, _, _ = _walk_class_folder(p, ignored)
            ignored.extend(SkippedFile(str(f), _IGNORED_UNDERSCORE) for f in files)
        elif not p.is_dir():
            ignored.append(SkippedFile(str(p), _IGNORED_OUTSIDE_CLASS))
            if _is_image(p):
                stray.append(p.name)
    if stray:
        warnings.append(
            f"{len(stray)} image file(s) directly in {root} ignored (not inside a class folder), e.g. {stray[0]}"
        )
    entries: list[_Entry] = []
    empty: list[str] = []
    nested = False
    n_top = len(ignored)
    for d in class_dirs:
        files, _, has_sub = _walk_class_folder(d, ignored)
        nested |= has_sub
        if not files:
            empty.append(d.name)
        entries.extend(_Entry(f, d.name) for f in files)
    inside = len(ignored) - n_top
    if inside:
        warnings.append(f"{inside} non-image, hidden or broken-link file(s) or folder(s) in class folders "
                        "ignored; each is listed in skipped.csv (cause 'ignored: ...')")
    skipped.extend(ignored)
    if layout == "auto":
        layout = "paper" if nested else "flat"
    return entries, empty, layout


def _walk_class_folder(folder: Path, ignored: list[SkippedFile]) -> tuple[list[str], int, bool]:
    """(image files at any depth, count of files not read, whether there are sub-folders).

    Every file not read is appended to ``ignored`` with its cause. The order is that of a
    top-down ``os.walk`` with sorted names (each folder's ignored sub-folders, then its files,
    then its sub-folders in turn); the entries' types come from ``os.scandir`` without a
    ``stat`` per file (only links are followed, to find broken ones)."""
    files: list[str] = []
    n_before = len(ignored)
    has_sub = False
    pending = [str(folder)]
    while pending:
        here = pending.pop()
        dirnames, filenames = _scan(here)
        keep = []
        for n in sorted(dirnames):
            sub = os.path.join(here, n)
            if n.startswith("."):
                ignored.append(SkippedFile(sub, _IGNORED_HIDDEN_FOLDER.format(n=_count_files(Path(sub)))))
            elif dirnames[n]:  # a link to a folder: not followed; say so
                ignored.append(SkippedFile(sub, _IGNORED_FOLDER_LINK))
            else:
                keep.append(sub)
        if keep:
            has_sub = True
        for name in sorted(filenames):
            p = os.path.join(here, name)
            if name.startswith("."):
                ignored.append(SkippedFile(p, _IGNORED_HIDDEN_FILE))
            elif filenames[name] and not os.path.exists(p):
                ignored.append(SkippedFile(p, _IGNORED_BROKEN_LINK))
            elif os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                files.append(p)
            else:
                ignored.append(SkippedFile(p, _ignored_not_image(Path(p))))
        pending.extend(reversed(keep))  # depth first, sub-folders in sorted order
    return files, len(ignored) - n_before, has_sub


def _scan(folder: str) -> tuple[dict[str, bool], dict[str, bool]]:
    """``({sub-folder: is a link}, {file: is a link})`` of one folder, split as ``os.walk``
    splits them (a link to a folder counts as a folder, a broken link as a file); an
    unreadable folder is empty, as ``os.walk`` skips it."""
    dirs: dict[str, bool] = {}
    files: dict[str, bool] = {}
    try:
        with os.scandir(folder) as it:
            for entry in it:
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                try:
                    link = entry.is_symlink()
                except OSError:
                    link = False
                (dirs if is_dir else files)[entry.name] = link
    except OSError:
        pass
    return dirs, files


def _outside_cause(written: str) -> str | None:
    """Why a manifest path leaves the manifest's folder, or None if it stays inside."""
    if Path(written).is_absolute() or os.path.isabs(written):
        why = "an absolute path"
    elif os.path.normpath(written).replace("\\", "/").split("/")[0] == "..":
        why = "a '..' path that leaves the manifest's folder"
    else:
        return None
    return f"manifest path is {why}; set data.allow_outside_paths: true to allow it"


def _list_manifest(manifest: Path, root: Path, allow_outside: bool = False,
                   refused: list[SkippedFile] | None = None) -> list[_Entry]:
    """Entries of a manifest CSV (``path,label`` and optional ``sha256``).

    A path outside the manifest's folder (absolute, or ``..`` leaving it) is appended to
    ``refused`` instead, unless ``allow_outside``."""
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
            outside = None if allow_outside else _outside_cause(row["path"])
            if outside is not None:
                if refused is not None:
                    refused.append(SkippedFile(str(root / row["path"]), f"line {lineno}: {outside}"))
                continue
            entries.append(_Entry(str(root / row["path"]), row["label"], sha.lower() if sha else None))
    return entries


def _prefix_label(path: str) -> str:
    """File-name part before the first ``_`` (the whole stem when there is none)."""
    return Path(path).stem.split("_", 1)[0]


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
    keep_unmapped: bool = False,
) -> tuple[list[_Entry], list[str]]:
    """Map raw labels to class codes; report (never drop silently) labels without a mapping:
    left out (in ``skipped``), or kept as :data:`UNMAPPED` with ``keep_unmapped``."""
    if label_map is None:
        return entries, empty_labels
    kept: list[_Entry] = []
    unmapped: Counter[str] = Counter()
    for e in entries:
        if e.label in label_map:
            kept.append(_Entry(e.path, str(label_map[e.label]), e.expected_sha256))
        else:
            unmapped[e.label] += 1
            if keep_unmapped:
                kept.append(_Entry(e.path, UNMAPPED, e.expected_sha256))
            else:
                skipped.append(SkippedFile(e.path, f"label {e.label!r} not in label_map"))
    for label, n in sorted(unmapped.items()):
        if keep_unmapped:
            warnings.append(f"{n} image(s) with {label_from} label {label!r} not in label_map: predicted and "
                            "shown in the external confusion matrix, not scored (unmapped: predict)")
        else:
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
    kept = [e for e in entries if e.label in wanted or e.label == UNMAPPED]  # kept unmapped: no class to filter
    excluded: Counter[str] = Counter()
    for e in entries:
        if e.label not in wanted and e.label != UNMAPPED:
            excluded[e.label] += 1
            skipped.append(SkippedFile(e.path, f"class {e.label!r} not in the selected classes"))
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


@dataclass
class _Checks:
    """The outcome of checking every entry, as parallel lists (one object per file is a cost
    at 171,374 files)."""

    sha: list[str | None]  # None: bad (or not verified)
    cause: list[str | None]  # None: good
    phash: np.ndarray | None = None  # (n, HASH_WORDS) uint64; rows of bad files are 0
    phash_seconds: float = 0.0  # CPU seconds of the perceptual hashes, over all threads


def _check_file(
    path: str, expected_sha: str | None, image_size: tuple[int, int] | None, phash: bool = False
) -> tuple[str | None, str | None, object]:
    """``(sha256, None, (grey image, seconds) or None)`` of a good file, ``(None, cause, None)``
    of a bad one.

    Reads the bytes once and both hashes and decodes them (:func:`cytocompare.images.check_image`,
    the check every later read makes too), so each file is read from disk once. With ``phash``
    the decoded image is converted to grey (as ``imagehash`` does first) and handed back for
    the perceptual hash (:func:`_check_chunk`), without an RGB array in between.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None, ("broken symbolic link (its target does not exist)" if os.path.islink(path)
                      else "file not found"), None
    except OSError as exc:
        return None, f"cannot read the file ({exc})", None
    if not data:
        return None, "empty file (0 bytes)", None
    sha = hashlib.sha256(data).hexdigest()
    if expected_sha is not None and sha != expected_sha:
        return None, f"sha256 {sha[:12]}... does not match the manifest's {expected_sha[:12]}...", None
    try:
        grey = check_image(data, name=path, expected_size=image_size, then=_to_grey if phash else None)
    except BadImageError as exc:
        return None, exc.cause, None
    return sha, None, grey


def _to_grey(im: object) -> tuple[object, float]:
    """The grey image the perceptual hash starts from, and the CPU seconds it took (counted
    with the hash)."""
    t0 = time.thread_time()
    grey = im.convert("L")  # type: ignore[attr-defined]
    return grey, time.thread_time() - t0


def _check_chunk(entries: Sequence[_Entry], image_size: tuple[int, int] | None, phash: bool) -> _Checks:
    """Check a chunk of files; with ``phash`` hash the good ones together (one DCT for the chunk,
    :func:`cytocompare.near_duplicates.hashes_from_downscales`)."""
    checked = [_check_file(e.path, e.expected_sha256, image_size, phash) for e in entries]
    checks = _Checks([c[0] for c in checked], [c[1] for c in checked])
    if not phash:
        return checks
    from cytocompare.near_duplicates import HASH_WORDS, grey_downscales, hashes_from_downscales

    t1 = time.thread_time()
    good = [k for k, c in enumerate(checked) if c[0] is not None]
    checks.phash = np.zeros((len(entries), HASH_WORDS), np.uint64)
    if good:
        small, tiny = zip(*(grey_downscales(checked[k][2][0]) for k in good))
        checks.phash[good] = hashes_from_downscales(np.stack(small), np.stack(tiny))
    checks.phash_seconds = time.thread_time() - t1 + sum(checked[k][2][1] for k in good)
    return checks


def _raise_bad(bad: Sequence[SkippedFile], n_files: int, skipped: list[SkippedFile]) -> None:
    """Stop mode: one error listing the first bad files; it carries every one of them."""
    listed = "\n".join(f"  {b.path}: {b.cause}" for b in bad[:_MAX_LISTED_BAD])
    more = f"\n  ... and {len(bad) - _MAX_LISTED_BAD} more" if len(bad) > _MAX_LISTED_BAD else ""
    raise BadFilesError(
        f"{len(bad)} bad image file(s) of {n_files}:\n{listed}{more}\n"
        "fix or remove them, or set on_bad_file: skip to leave them out (each is listed with its cause "
        "in skipped.csv)",
        skipped=[*skipped, *bad], bad=list(bad),
    )


def _verify_entries(
    entries: list[_Entry],
    verify: bool,
    image_size: tuple[int, int] | None,
    on_bad_file: str,
    skipped: list[SkippedFile],
    progress: ProgressCallback | None,
    n_jobs: int,
    phash: bool = False,
    pending: Sequence[SkippedFile] = (),
) -> _Checks:
    """The check of every entry (``sha`` None for a bad file); bad files are raised or added to
    ``skipped``. ``pending``: files found bad before the check (stop mode), raised with the others."""
    if not verify:
        return _Checks([None] * len(entries), [None] * len(entries))
    checks = _run_checks(entries, image_size, progress, n_jobs, phash)
    bad = [*pending, *(SkippedFile(e.path, c) for e, c in zip(entries, checks.cause) if c is not None)]
    if bad and on_bad_file == "stop":
        _raise_bad(bad, len(entries) + len(pending), skipped)
    skipped.extend(bad)
    return checks


def _run_checks(
    entries: list[_Entry],
    image_size: tuple[int, int] | None,
    progress: ProgressCallback | None,
    n_jobs: int,
    phash: bool = False,
) -> _Checks:
    """Check every entry in parallel threads, reporting progress as chunks finish."""
    from joblib import Parallel, delayed

    total = len(entries)
    chunks = [entries[i:i + _VERIFY_CHUNK] for i in range(0, total, _VERIFY_CHUNK)]
    out = _Checks([], [], [] if phash else None)  # type: ignore[arg-type]
    if progress is not None:
        progress(0, total)
    # threads, not processes: decoding and hashing release the GIL, and nothing is pickled
    parallel = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")
    for part in parallel(delayed(_check_chunk)(c, image_size, phash) for c in chunks):
        out.sha.extend(part.sha)
        out.cause.extend(part.cause)
        if phash:
            out.phash.append(part.phash)  # type: ignore[union-attr]
            out.phash_seconds += part.phash_seconds
        if progress is not None:
            progress(len(out.sha), total)
    if phash:
        from cytocompare.near_duplicates import HASH_WORDS

        out.phash = np.concatenate(out.phash) if out.phash else np.zeros((0, HASH_WORDS), np.uint64)  # type: ignore[arg-type]
    return out


def _final_hashes(kept: list[_Entry], hashes: list[str | None], verify: bool) -> list[str] | None:
    """Verified hashes; without verification the manifest's, or None (hashed lazily later)."""
    if verify:
        return [h for h in hashes if h is not None]
    if all(e.expected_sha256 for e in kept):
        return [e.expected_sha256 for e in kept]  # type: ignore[misc]
    return None
