"""Content-keyed, resumable, parallel feature extraction to an append-only float32 store.

Features are per image and stateless (see :class:`cytocompare.protocols.FeatureExtractor`), so
each image's vector is computed once per extractor configuration and reused across folds,
methods and reruns. Rows are keyed by the image content (sha256, plus any crop or resize applied on
load: ``ImageSet.content_keys``), so a renamed or duplicated file is
not computed again.

Layout of one extractor's store (``root/<extractor key>/``)::

    features.f32   raw float32 rows of d columns, appended chunk by chunk
    index.csv      sha256,row -- appended (and flushed) after each chunk's rows are written
    meta.json      extractor class path, plugin distribution and version, parameters, number of
                   features, feature-name hash
    .lock          held while computing (:class:`cytocompare.locking.DirectoryLock`): a second
                   process fails clearly, naming the holder; a dead holder's lock is taken over

The store's key (:func:`extractor_key`) includes the version of the plugin distribution the
extractor class comes from, so an upgraded plugin computes into a new store.

The index is written after the rows it names, so after a crash the store is cut back to the
rows the index knows and extraction resumes at the first missing image.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from cytocompare.compute import LocalBackend
from cytocompare.errors import CytocompareError
from cytocompare.images import ImageSet
from cytocompare.locking import DirectoryLock, DirectoryLockedError

__all__ = ["CacheLockedError", "FeatureCache", "FeatureExtractionError", "extractor_key", "extractor_version"]

ProgressCallback = Callable[[int, int], None]

_ITEM = np.dtype(np.float32).itemsize
#: gathered outputs larger than this go to a memmap file instead of RAM
GATHER_IN_MEMORY_MAX_BYTES = 1 << 30
# rows copied per step when gathering, so no step holds more than a few MB extra
_GATHER_BLOCK = 8192


class FeatureExtractionError(CytocompareError):
    """An extractor returned something other than a float32 (n_images, n_features) array."""


class CacheLockedError(DirectoryLockedError):
    """Another process is writing the same feature store (``holder`` names it)."""


# --------------------------------------------------------------------------------------------
# extractor identity
# --------------------------------------------------------------------------------------------


def _class_path(extractor: Any) -> str:
    cls = type(extractor)
    return f"{cls.__module__}.{cls.__qualname__}"


def _params_repr(extractor: Any) -> str:
    """Sorted, shallow parameter repr (deep params repeat nested ones and can be noisy)."""
    params = extractor.get_params(deep=False) if hasattr(extractor, "get_params") else {}
    return repr(sorted(params.items()))


def _names_hash(names: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(map(str, names)).encode()).hexdigest()


@lru_cache(maxsize=None)
def _distributions_of_packages() -> dict[str, tuple[str, ...]]:
    from importlib import metadata

    return {k: tuple(v) for k, v in metadata.packages_distributions().items()}


@lru_cache(maxsize=None)
def _distribution_version(top_package: str) -> tuple[str, str] | None:
    """(distribution, version) installing the top-level package, or None (not installed, e.g. a
    class defined in a script or a test)."""
    from importlib import metadata

    for dist in sorted(_distributions_of_packages().get(top_package, ())):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:  # pragma: no cover - a stale entry
            continue
    return None


def extractor_version(extractor: Any) -> tuple[str, str] | None:
    """The distribution and version of the package the extractor's class comes from.

    Found through the class's top-level package (``cytocompare_classical.extractor`` ->
    ``cytocompare_classical`` -> distribution ``cytocompare-classical``); None when that package
    belongs to no installed distribution.
    """
    top = type(extractor).__module__.split(".", 1)[0]
    return _distribution_version(top)


def extractor_key(extractor: Any) -> str:
    """A folder-safe key naming an extractor configuration.

    Built from the class path, the ``get_params()`` repr, a hash of ``get_feature_names_out()``
    and the distribution and version of the plugin the class comes from
    (:func:`extractor_version`); any change of these gives a new key (a new store), so an
    upgraded plugin never reuses features computed by its earlier version. A class of no
    installed distribution has the key it had before versions were part of it.

    Parameters
    ----------
    extractor : FeatureExtractor

    Returns
    -------
    str
        ``<ClassName>-<16 hex digits>``.
    """
    names = list(extractor.get_feature_names_out())
    identity = f"{_class_path(extractor)}\n{_params_repr(extractor)}\n{_names_hash(names)}"
    version = extractor_version(extractor)
    if version is not None:
        identity += f"\nplugin={version[0]} {version[1]}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    safe_name = "".join(ch if ch.isalnum() else "_" for ch in type(extractor).__name__)
    return f"{safe_name}-{digest}"


# --------------------------------------------------------------------------------------------
# extraction of one chunk (runs in a joblib or dask worker)
# --------------------------------------------------------------------------------------------


def _extract_chunk(extractor: Any, images: ImageSet) -> np.ndarray:
    return extractor.transform(images)


def _validate_output(out: Any, extractor: Any, n: int, d: int) -> np.ndarray:
    name = repr(extractor)
    if not isinstance(out, np.ndarray):
        raise FeatureExtractionError(f"{name}.transform returned {type(out).__name__}, expected a numpy array")
    if out.shape != (n, d):
        raise FeatureExtractionError(
            f"{name}.transform returned shape {out.shape} for {n} images, expected ({n}, {d}) "
            f"({d} = len(get_feature_names_out()))"
        )
    if out.dtype != np.float32:
        raise FeatureExtractionError(f"{name}.transform returned dtype {out.dtype}, expected float32")
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------------------------
# the store of one extractor
# --------------------------------------------------------------------------------------------


@dataclass
class _Store:
    """Files of one extractor key, plus the in-memory sha -> row index."""

    folder: Path
    n_features: int
    index: dict[str, int]

    @property
    def data_path(self) -> Path:
        return self.folder / "features.f32"

    @property
    def index_path(self) -> Path:
        return self.folder / "index.csv"

    @property
    def n_rows(self) -> int:
        return len(self.index)

    @classmethod
    def open(cls, folder: Path, extractor: Any, names: Sequence[str]) -> _Store:
        folder.mkdir(parents=True, exist_ok=True)
        d = len(names)
        _check_or_write_meta(folder, extractor, names)
        index, torn = _read_index(folder / "index.csv")
        store = cls(folder, d, index)
        if torn:  # rewrite without the torn tail, or later appends would hide behind it
            store.index_path.write_text("".join(f"{s},{r}\n" for s, r in index.items()), encoding="ascii")
        store._repair()
        return store

    def _repair(self) -> None:
        """Cut ``features.f32`` back to the rows the index knows (a crash mid-chunk)."""
        expected = self.n_rows * self.n_features * _ITEM
        size = self.data_path.stat().st_size if self.data_path.exists() else 0
        if size < expected:
            raise CytocompareError(
                f"{self.data_path}: feature store is shorter ({size} bytes) than its index says "
                f"({expected} bytes); delete {self.folder} to recompute"
            )
        if size > expected:
            with open(self.data_path, "r+b") as fh:
                fh.truncate(expected)
        elif not self.data_path.exists():
            self.data_path.touch()

    def append(self, shas: Sequence[str], rows: np.ndarray) -> None:
        """Append rows, then their index lines; both flushed to disk before returning."""
        start = self.n_rows
        with open(self.data_path, "ab") as fh:
            fh.write(rows.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        with open(self.index_path, "a", encoding="ascii") as fh:
            fh.write("".join(f"{s},{start + i}\n" for i, s in enumerate(shas)))
            fh.flush()
            os.fsync(fh.fileno())
        for i, s in enumerate(shas):
            self.index[s] = start + i

    def memmap(self) -> np.memmap:
        """Read-only view of every stored row."""
        return np.memmap(self.data_path, dtype=np.float32, mode="r", shape=(self.n_rows, self.n_features))


def _read_index(path: Path) -> tuple[dict[str, int], bool]:
    """(sha -> row, whether a torn tail was found)."""
    index: dict[str, int] = {}
    if not path.exists():
        return index, False
    lines = path.read_text(encoding="ascii").split("\n")
    # text after the last newline is a line torn by a killed writer; its rows get cut by _repair
    torn = lines.pop() != ""
    for lineno, line in enumerate(lines, start=1):
        sha, _, row = line.partition(",")
        if len(sha) != 64 or not row.isdigit() or int(row) != len(index):
            raise CytocompareError(
                f"{path}, line {lineno}: malformed or out of sequence; delete {path.parent} to recompute"
            )
        index[sha] = int(row)
    return index, torn


def _check_or_write_meta(folder: Path, extractor: Any, names: Sequence[str]) -> None:
    version = extractor_version(extractor)
    meta = {
        "class": _class_path(extractor),
        "plugin": None if version is None else {"distribution": version[0], "version": version[1]},
        "params": _params_repr(extractor),
        "repr": repr(extractor),
        "n_features": len(names),
        "feature_names_sha256": _names_hash(names),
        "dtype": "float32",
    }
    path = folder / "meta.json"
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        same = all(stored.get(k) == meta[k] for k in ("n_features", "feature_names_sha256"))
        if not same:
            raise CytocompareError(f"{path}: stored features do not match {meta['repr']}; delete {folder} to recompute")
        return
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _lock(folder: Path) -> DirectoryLock:
    """The store's exclusive lock (:class:`cytocompare.locking.DirectoryLock`): a second process
    gets :class:`CacheLockedError` naming the holder; a lock left by a dead process is taken over."""
    return DirectoryLock(folder, what="feature cache", error=CacheLockedError)


# --------------------------------------------------------------------------------------------
# public cache
# --------------------------------------------------------------------------------------------


class FeatureCache:
    """Per-image features, computed once per (image content, extractor configuration).

    Parameters
    ----------
    root : Path
        Folder holding one sub-folder per extractor key.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder(self, extractor: Any) -> Path:
        """The store folder of ``extractor``."""
        return self.root / extractor_key(extractor)

    def compute(
        self,
        extractor: Any,
        images: ImageSet,
        *,
        n_jobs: int = 1,
        batch_size: int = 64,
        progress: ProgressCallback | None = None,
        backend: Any = None,
    ) -> np.ndarray:
        """Features of ``images`` (in their order), computing only those not yet stored.

        Parameters
        ----------
        extractor : FeatureExtractor
            Its ``transform`` is called on sub-ImageSets of at most ``batch_size`` images.
        images : ImageSet
        n_jobs : int
            Chunks extracted in parallel (joblib processes; ``1``: in this process).
        batch_size : int
            Images per chunk; each finished chunk is stored at once (the resume granularity).
        progress : callable, optional
            ``progress(done, total)`` over the images that need computing.
        backend : LocalBackend or DaskBackend, optional
            Where the chunks are extracted (:mod:`cytocompare.compute`); default this machine's
            ``n_jobs`` processes. On a dask cluster the chunks' features come back here and are
            stored in chunk order, as a local run stores them.

        Returns
        -------
        numpy.ndarray or numpy.memmap
            float32 of shape (len(images), n_features). A read-only memmap view of the store
            when the images are stored contiguously and in order (no copy), else a new array
            (a memmap file under ``root`` when it is larger than about 1 GB).

        Raises
        ------
        FeatureExtractionError
            The extractor returned a wrong shape or dtype.
        CacheLockedError
            Another process is writing this extractor's store.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        names = list(extractor.get_feature_names_out())
        folder = self.folder(extractor)
        folder.mkdir(parents=True, exist_ok=True)
        shas = np.asarray(images.content_keys, dtype=object).astype(str)
        with _lock(folder):
            store = _Store.open(folder, extractor, names)
            missing = _first_of_missing(shas, store.index)
            self._extract(extractor, images, missing, store, backend or LocalBackend(n_jobs), batch_size, progress)
            rows = np.fromiter((store.index[s] for s in shas), dtype=np.int64, count=len(shas))
            return self._output(store, rows)

    # ---- internals ----------------------------------------------------------------------
    def _extract(
        self,
        extractor: Any,
        images: ImageSet,
        missing: np.ndarray,
        store: _Store,
        backend: Any,
        batch_size: int,
        progress: ProgressCallback | None,
    ) -> None:
        total = len(missing)
        if progress is not None:
            progress(0, total)
        if total == 0:
            return
        chunks = [missing[i:i + batch_size] for i in range(0, total, batch_size)]
        shas = np.asarray(images.content_keys, dtype=object).astype(str)
        done = 0
        # in order: chunks are stored as they come, so a one-shot run leaves the store in the
        # images' order and later calls can return a zero-copy view
        outputs = backend.map_ordered(_extract_chunk, ((extractor, images.subset(idx)) for idx in chunks))
        try:
            for idx, out in zip(chunks, outputs):
                rows = _validate_output(out, extractor, len(idx), store.n_features)
                store.append(shas[idx].tolist(), rows)
                done += len(idx)
                if progress is not None:
                    progress(done, total)
        finally:
            outputs.close()  # a stop here cancels the chunks still out (on a cluster)

    def _output(self, store: _Store, rows: np.ndarray) -> np.ndarray:
        n, d = len(rows), store.n_features
        if n == 0:
            return np.empty((0, d), dtype=np.float32)
        start = int(rows[0])
        if np.array_equal(rows, np.arange(start, start + n)):
            return np.memmap(store.data_path, dtype=np.float32, mode="r", shape=(n, d), offset=start * d * _ITEM)
        source = store.memmap()
        if n * d * _ITEM > GATHER_IN_MEMORY_MAX_BYTES:
            gather_dir = self.root / "_gathered"
            gather_dir.mkdir(parents=True, exist_ok=True)
            target = gather_dir / f"{uuid.uuid4().hex}.f32"
            out: np.ndarray = np.memmap(target, dtype=np.float32, mode="w+", shape=(n, d))
        else:
            out = np.empty((n, d), dtype=np.float32)
        for i in range(0, n, _GATHER_BLOCK):
            out[i:i + _GATHER_BLOCK] = source[rows[i:i + _GATHER_BLOCK]]
        return out


def _first_of_missing(shas: np.ndarray, index: dict[str, int]) -> np.ndarray:
    """Index of the first image of every sha not in the store (duplicates computed once)."""
    seen: set[str] = set()
    missing: list[int] = []
    for i, s in enumerate(shas):
        if s not in index and s not in seen:
            seen.add(s)
            missing.append(i)
    return np.asarray(missing, dtype=np.int64)
