"""The content-keyed feature cache: reuse, resume after interruption, views, validation, lock."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from cytocompare.base import BaseComponent
from cytocompare.feature_cache import (
    CacheLockedError,
    FeatureCache,
    FeatureExtractionError,
    extractor_key,
)
from cytocompare.images import ImageSet


class MeanColour(BaseComponent):
    """Mean and sd per channel, scaled; records every image it was asked to compute."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def fit(self, images: ImageSet, y: np.ndarray | None = None) -> MeanColour:
        return self

    def get_feature_names_out(self) -> list[str]:
        return [f"{s}.{c}" for s in ("mean", "sd") for c in "rgb"]

    def transform(self, images: ImageSet) -> np.ndarray:
        self.__dict__.setdefault("seen", []).extend(images.sha256.tolist())
        out = np.empty((len(images), 6), dtype=np.float32)
        for i in range(len(images)):
            img = images[i].reshape(-1, 3).astype(np.float32)
            out[i] = np.concatenate([img.mean(0), img.std(0)]) * self.scale
        return out


class Interrupted(Exception):
    pass


class FailingAfter(MeanColour):
    """Raises once it has been asked for more than ``_limit`` images (a killed run).

    ``_limit`` is not a parameter, so every instance has the same cache key."""

    _limit = 10**9

    def transform(self, images: ImageSet) -> np.ndarray:
        if len(self.__dict__.get("seen", [])) + len(images) > self._limit:
            raise Interrupted
        return super().transform(images)


class WrongOutput(MeanColour):
    def __init__(self, scale: float = 1.0, kind: str = "dtype") -> None:
        self.scale = scale
        self.kind = kind

    def transform(self, images: ImageSet) -> np.ndarray:
        out = super().transform(images)
        return out.astype(np.float64) if self.kind == "dtype" else out[:, :3]


def _images(n: int, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(n)]
    return ImageSet.from_arrays(arrays, ["A"] * n)


def test_extractor_key_tracks_identity() -> None:
    assert extractor_key(MeanColour()) == extractor_key(MeanColour())
    assert extractor_key(MeanColour(scale=2.0)) != extractor_key(MeanColour())
    assert extractor_key(FailingAfter()) != extractor_key(MeanColour())
    assert extractor_key(MeanColour()).startswith("MeanColour-")


def test_compute_store_and_reuse(tmp_path: Path) -> None:
    images = _images(10)
    ext = MeanColour()
    cache = FeatureCache(tmp_path)
    X = cache.compute(ext, images, batch_size=3)
    assert X.shape == (10, 6) and X.dtype == np.float32
    expected = MeanColour().transform(images)
    np.testing.assert_allclose(X, expected)
    folder = tmp_path / extractor_key(ext)
    assert {p.name for p in folder.iterdir()} >= {"features.f32", "index.csv", "meta.json"}
    assert not (folder / ".lock").exists()

    ext.seen = []
    again = cache.compute(ext, images)
    assert ext.seen == []  # nothing recomputed
    assert isinstance(again, np.memmap) and not again.flags.writeable  # zero-copy view
    np.testing.assert_array_equal(again, X)


def test_subsets_views_and_gathers(tmp_path: Path) -> None:
    images = _images(12)
    ext = MeanColour()
    cache = FeatureCache(tmp_path)
    full = np.array(cache.compute(ext, images, batch_size=5))
    middle = cache.compute(ext, images.subset(np.arange(3, 9)))
    assert isinstance(middle, np.memmap)
    np.testing.assert_array_equal(middle, full[3:9])
    shuffled_idx = np.array([7, 2, 11, 0])
    gathered = cache.compute(ext, images.subset(shuffled_idx))
    assert not isinstance(gathered, np.memmap)
    np.testing.assert_array_equal(gathered, full[shuffled_idx])


def test_resume_after_interruption(tmp_path: Path) -> None:
    images = _images(20)
    one_shot = np.array(FeatureCache(tmp_path / "a").compute(MeanColour(), images, batch_size=4))

    cache = FeatureCache(tmp_path / "b")
    failing = FailingAfter()
    failing._limit = 8
    with pytest.raises(Interrupted):
        cache.compute(failing, images, batch_size=4)
    assert failing.seen == images.sha256[:8].tolist()  # two chunks were stored
    folder = tmp_path / "b" / extractor_key(failing)
    assert not (folder / ".lock").exists()

    # the same configuration (same key) completes the rest, never recomputing stored rows
    resumed = FailingAfter()
    result = cache.compute(resumed, images, batch_size=4)
    assert resumed.seen == images.sha256[8:20].tolist()
    np.testing.assert_array_equal(result, one_shot)


def test_resume_after_torn_write(tmp_path: Path) -> None:
    """A process killed between writing rows and index lines leaves extra bytes and a torn line."""
    images = _images(6)
    cache = FeatureCache(tmp_path)
    ext = MeanColour()
    cache.compute(ext, images.subset(np.arange(4)), batch_size=2)
    folder = tmp_path / extractor_key(ext)
    with open(folder / "features.f32", "ab") as fh:
        fh.write(b"\x00" * 30)  # part of a chunk whose index was never written
    with open(folder / "index.csv", "a") as fh:
        fh.write("abc")  # torn index line
    ext.seen = []
    X = cache.compute(ext, images, batch_size=2)
    assert ext.seen == images.sha256[4:].tolist()
    np.testing.assert_allclose(X, MeanColour().transform(images))
    assert len((folder / "index.csv").read_text().splitlines()) == 6


def test_duplicates_computed_once(tmp_path: Path) -> None:
    base = _images(4)
    images = base.subset([0, 1, 1, 2, 0, 3])
    ext = MeanColour()
    X = FeatureCache(tmp_path).compute(ext, images, batch_size=2)
    assert len(ext.seen) == 4 and len(set(ext.seen)) == 4
    np.testing.assert_array_equal(X[1], X[2])
    np.testing.assert_array_equal(X[0], X[4])


def test_progress_reports_missing_only(tmp_path: Path) -> None:
    images = _images(7)
    cache = FeatureCache(tmp_path)
    cache.compute(MeanColour(), images.subset(np.arange(3)))
    calls: list[tuple[int, int]] = []
    cache.compute(MeanColour(), images, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 4) and calls[-1] == (4, 4)


@pytest.mark.parametrize("kind, match", [("dtype", "float64"), ("shape", r"\(3, 3\)")])
def test_wrong_output_is_named(tmp_path: Path, kind: str, match: str) -> None:
    with pytest.raises(FeatureExtractionError, match=rf"WrongOutput.*{match}"):
        FeatureCache(tmp_path).compute(WrongOutput(kind=kind), _images(3))


def test_parallel_matches_serial(tmp_path: Path) -> None:
    images = _images(16)
    serial = np.array(FeatureCache(tmp_path / "s").compute(MeanColour(), images, batch_size=4))
    parallel = FeatureCache(tmp_path / "p").compute(MeanColour(), images, batch_size=4, n_jobs=2)
    np.testing.assert_array_equal(parallel, serial)


def test_lock_held_by_live_process_fails(tmp_path: Path) -> None:
    ext = MeanColour()
    folder = tmp_path / extractor_key(ext)
    folder.mkdir(parents=True)
    (folder / ".lock").write_text(str(os.getppid()))  # a live process that is not us
    with pytest.raises(CacheLockedError, match="lock"):
        FeatureCache(tmp_path).compute(ext, _images(2))
    # a lock left by a dead process is taken over
    (folder / ".lock").write_text("999999999")
    assert FeatureCache(tmp_path).compute(ext, _images(2)).shape == (2, 6)


def test_empty_request(tmp_path: Path) -> None:
    X = FeatureCache(tmp_path).compute(MeanColour(), _images(3).subset([]))
    assert X.shape == (0, 6)


def test_large_gather_goes_to_memmap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cytocompare.feature_cache as fc

    images = _images(6)
    cache = FeatureCache(tmp_path)
    full = np.array(cache.compute(MeanColour(), images))
    monkeypatch.setattr(fc, "GATHER_IN_MEMORY_MAX_BYTES", 10)
    out = cache.compute(MeanColour(), images.subset([5, 0, 3]))
    assert isinstance(out, np.memmap) and Path(out.filename).parent == tmp_path / "_gathered"
    np.testing.assert_array_equal(out, full[[5, 0, 3]])


def test_crop_on_load_is_part_of_the_key(tmp_path: Path) -> None:
    """The same file decoded with a centre crop is another image: never served the uncropped row."""
    from PIL import Image

    rng = np.random.default_rng(3)
    paths = []
    for i in range(3):
        arr = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
        arr[5:15, 5:15] = (10 * i, 200, 30)  # the centre differs from the border
        p = tmp_path / f"img{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    cache = FeatureCache(tmp_path / "cache")
    whole = ImageSet(paths, ["A", "B", "C"])
    cropped = ImageSet(paths, ["A", "B", "C"], crop=(10, 10))
    f_whole = np.array(cache.compute(MeanColour(), whole))
    f_crop = np.array(cache.compute(MeanColour(), cropped))
    np.testing.assert_allclose(f_crop, MeanColour().transform(cropped), rtol=1e-6)
    assert not np.allclose(f_whole, f_crop)


# ---- plugin version in the key (issue 8.14) -------------------------------------------------


def test_plugin_version_is_part_of_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cytocompare.feature_cache as fc

    images = _images(5)
    cache = FeatureCache(tmp_path)
    # a class of no installed distribution keeps its version-free key
    assert fc.extractor_version(MeanColour()) is None
    # the same class, "installed" by a plugin distribution at two versions
    monkeypatch.setattr(fc, "_distribution_version", lambda top: ("cytocompare-fake", "1.0"))
    old = MeanColour()
    folder_1 = cache.folder(old)
    cache.compute(old, images)
    meta = json.loads((folder_1 / "meta.json").read_text())
    assert meta["plugin"] == {"distribution": "cytocompare-fake", "version": "1.0"}
    monkeypatch.setattr(fc, "_distribution_version", lambda top: ("cytocompare-fake", "2.0"))
    new = MeanColour()
    folder_2 = cache.folder(new)
    assert folder_2 != folder_1 and folder_2.name.startswith("MeanColour-")
    cache.compute(new, images)
    assert len(new.seen) == 5, "the upgraded plugin recomputed every image instead of reusing stale features"


def test_real_plugin_extractor_key_names_its_distribution() -> None:
    from cytocompare.feature_cache import extractor_version

    from cytocompare_example.features import ColourStatistics

    dist, version = extractor_version(ColourStatistics())
    assert dist == "cytocompare-example" and version


def test_cache_lock_error_names_the_holder(tmp_path: Path) -> None:
    from cytocompare.locking import DirectoryLock, DirectoryLockedError

    ext = MeanColour()
    cache = FeatureCache(tmp_path)
    folder = cache.folder(ext)
    with DirectoryLock(folder, what="feature cache", command="cytocompare run other.yaml"):
        # the same process through another lock object: held (no self-deadlock, no take-over)
        with pytest.raises(CacheLockedError, match="other.yaml") as info:
            cache.compute(ext, _images(3))
    assert isinstance(info.value, DirectoryLockedError) and info.value.holder is not None
    cache.compute(ext, _images(3))  # released
    assert not (folder / ".lock").exists()
