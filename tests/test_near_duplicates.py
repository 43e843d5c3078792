"""Near-duplicate grouping (issue 8 item 17) on the bundled real cells and on synthetic hashes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imagehash  # a core dependency (pyproject.toml): its absence is a broken install, not a skip

import cytocompare.hamming as hamming  # noqa: E402
import cytocompare.near_duplicates as nd  # noqa: E402
from cytocompare.datasets import bundled_sample_path, load_dataset  # noqa: E402
from cytocompare.errors import DataError  # noqa: E402
from cytocompare.images import ImageSet  # noqa: E402
from cytocompare.near_duplicates import (  # noqa: E402
    DEFAULT_THRESHOLD,
    find_near_duplicates,
    hamming_distance,
    near_duplicate_groups,
    near_duplicate_pairs,
    perceptual_hash,
    perceptual_hashes,
)


def _sample_files() -> list[Path]:
    return sorted(bundled_sample_path("matek-bm-sample").glob("*/*.jpg"))


def _jpeg(im: Image.Image, quality: int = 75) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _resized(im: Image.Image) -> Image.Image:
    w, h = im.size
    return im.resize((w * 4 // 5, h * 4 // 5), Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.BILINEAR)


def _cropped(im: Image.Image, fraction: float = 0.02) -> Image.Image:
    w, h = im.size
    d = round(w * fraction)
    return im.crop((d, d, w - d, h - d))


def _flip_bits(h: np.ndarray, bits: list[int]) -> np.ndarray:
    out = h.copy()
    for b in bits:
        out[b // 64] ^= np.uint64(1) << np.uint64(b % 64)
    return out


def _random_hashes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(np.uint64).max, size=(n, nd.HASH_WORDS), dtype=np.uint64, endpoint=True)


def _brute_force_pairs(h: np.ndarray, threshold: int, other: np.ndarray | None = None) -> set[tuple[int, int, int]]:
    b = h if other is None else other
    out = set()
    for i in range(len(h)):
        for j in range(i + 1 if other is None else 0, len(b)):
            d = hamming_distance(h[i], b[j])
            if d <= threshold:
                out.add((i, j, d))
    return out


# ------------------------------------------------------------------------------------------
# the hash itself
# ------------------------------------------------------------------------------------------


def test_hash_is_phash_then_dhash_in_imagehash_bit_order() -> None:
    path = _sample_files()[0]
    h = perceptual_hash(path)
    assert h.dtype == np.uint64 and h.shape == (nd.HASH_WORDS,)
    with Image.open(path) as im:
        im = im.convert("RGB")
        assert f"{int(h[0]):016x}" == str(imagehash.phash(im, 8))
        assert f"{int(h[1]):016x}" == str(imagehash.dhash(im, 8))
    # a path, a PIL image and an array of the same pixels hash alike
    arr = np.asarray(Image.open(path).convert("RGB"))
    assert (perceptual_hash(arr) == h).all()
    assert (perceptual_hash(Image.fromarray(arr)) == h).all()


def _imagehash_words(im: Image.Image) -> tuple[int, int]:
    return int(str(imagehash.phash(im, 8)), 16), int(str(imagehash.dhash(im, 8)), 16)


def test_stacked_hashes_are_imagehash_on_each_image(tmp_path: Path) -> None:
    # the hashes are computed for a whole stack at once (one DCT per 16 images, numpy's median
    # per row); every image must still get exactly imagehash's phash and dhash of its own
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
              for h, w in [(16, 16), (8, 9), (250, 250), (363, 360), (31, 17), (1, 1)] for _ in range(6)]
    arrays += [np.full((20, 20, 3), v, np.uint8) for v in (0, 128, 255)]  # flat: the median ties
    smooth = np.linspace(0, 255, 64 * 64).reshape(64, 64)
    arrays += [np.stack([smooth, smooth.T, 255 - smooth], -1).astype(np.uint8)]
    files = _sample_files()
    got = perceptual_hashes([*arrays, *files])
    assert len(got) > 3 * nd._DCT_BATCH  # several stacks, and a last one that is not full
    expected = [_imagehash_words(Image.fromarray(a)) for a in arrays]
    for f in files:
        with Image.open(f) as im:
            expected.append(_imagehash_words(im.convert("RGB")))
    assert [(int(a), int(b)) for a, b in got] == expected
    # the data check hashes files in chunks too, and gets the same
    for k, f in enumerate(files[:40]):
        (tmp_path / "X").mkdir(exist_ok=True)
        (tmp_path / "X" / f"{k:03d}.jpg").write_bytes(f.read_bytes())
    ds = load_dataset(tmp_path, perceptual_hashes=True)
    assert [(int(a), int(b)) for a, b in ds.perceptual_hashes] == expected[len(arrays):len(arrays) + 40]


def test_the_stacked_dct_is_bit_for_bit_the_dct_of_each_image() -> None:
    # what the stacked hashes rest on (a flipped last bit of a coefficient next to the median
    # would flip a hash bit only rarely, so the hashes alone would not show it)
    import scipy.fftpack

    small = np.stack([nd.grey_downscales(nd._grey(f))[0] for f in _sample_files()[:2 * nd._DCT_BATCH]])
    for s in range(0, len(small), nd._DCT_BATCH):
        stacked = scipy.fftpack.dct(scipy.fftpack.dct(small[s:s + nd._DCT_BATCH], axis=1), axis=2)
        for k, coefficients in enumerate(stacked):
            alone = scipy.fftpack.dct(scipy.fftpack.dct(small[s + k], axis=0), axis=1)  # imagehash.phash's call
            assert coefficients.tobytes() == alone.tobytes()


def test_hashes_of_an_imageset_and_in_parallel_are_the_same() -> None:
    files = _sample_files()[:70]
    serial = perceptual_hashes(files)
    assert serial.shape == (70, nd.HASH_WORDS)
    assert (perceptual_hashes(ImageSet(files, ["x"] * 70)) == serial).all()
    assert (perceptual_hashes(files, n_jobs=2) == serial).all()


def test_a_bad_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(_sample_files()[0].read_bytes()[:300])
    with pytest.raises(DataError, match="broken.jpg"):
        perceptual_hashes([bad])


# ------------------------------------------------------------------------------------------
# real cells: copies are grouped, different cells are not
# ------------------------------------------------------------------------------------------


def test_reencoded_resized_and_cropped_copies_are_grouped_with_their_original() -> None:
    files = _sample_files()[::40][:5]  # one cell of each of 5 classes
    originals = [Image.open(f).convert("RGB") for f in files]
    images: list[object] = list(files)
    owner = list(range(len(files)))
    for k, im in enumerate(originals):
        for copy in (_jpeg(im), _resized(im), _cropped(im), _jpeg(_cropped(_resized(im)))):
            images.append(copy)
            owner.append(k)
    ids = near_duplicate_groups(perceptual_hashes(images))
    owner_arr = np.asarray(owner)
    for k in range(len(files)):
        assert len(set(ids[owner_arr == k])) == 1, f"copies of {files[k].name} were not grouped with it"
    assert len(set(ids)) == len(files), "copies of different cells were merged"


def test_distinct_real_cells_are_not_grouped() -> None:
    files = _sample_files()
    hashes = perceptual_hashes(files)
    report = find_near_duplicates(hashes, [f.name for f in files], [f.parent.name for f in files])
    assert report.groups == (), report.summary()
    assert len(set(report.group_ids)) == len(files)
    # and the threshold has a margin: the closest two different cells are well above it
    _, _, d = near_duplicate_pairs(hashes, 128)
    assert d.min() > DEFAULT_THRESHOLD + 2


# ------------------------------------------------------------------------------------------
# grouping logic on synthetic hashes
# ------------------------------------------------------------------------------------------


def test_grouping_is_transitive() -> None:
    a = _random_hashes(1, seed=1)[0]
    b = _flip_bits(a, list(range(0, 10)))       # a~b: 10
    c = _flip_bits(b, list(range(64, 74)))      # b~c: 10, a~c: 20 > threshold
    far = _flip_bits(a, list(range(0, 128, 2)))  # 64 from a
    h = np.stack([a, far, c, b])
    assert hamming_distance(a, c) > DEFAULT_THRESHOLD
    ids = near_duplicate_groups(h)
    assert ids.tolist() == [0, 1, 0, 0]
    report = find_near_duplicates(h, ["a", "far", "c", "b"], ["X", "Y", "X", "Z"])
    (group,) = report.groups
    assert group.paths == ("a", "c", "b")
    assert group.max_distance == 10 and group.mixed_labels
    rows = {r["path"]: r for r in report.rows()}
    assert rows["a"]["nearest"] == "b" and rows["c"]["nearest"] == "b" and rows["b"]["distance"] == 10
    assert "1 near-duplicate groups (3 of 4 images" in report.summary()
    assert "different labels" in report.summary()


def test_empty_input() -> None:
    h = perceptual_hashes([])
    assert h.shape == (0, nd.HASH_WORDS)
    assert near_duplicate_groups(h).shape == (0,)
    assert all(len(x) == 0 for x in near_duplicate_pairs(h))
    report = find_near_duplicates(h)
    assert report.groups == () and report.n_images == 0
    assert "no near-duplicates" in report.summary()


def test_a_single_image_is_its_own_group() -> None:
    assert near_duplicate_groups(_random_hashes(1)).tolist() == [0]


def test_threshold_zero_is_exact_hash_grouping() -> None:
    rng = np.random.default_rng(3)
    base = _random_hashes(40, seed=3)
    h = base[rng.integers(0, 40, size=200)]  # many exact repeats
    h[5] = _flip_bits(h[5], [7])              # a 1-bit neighbour stays apart at threshold 0
    ids = near_duplicate_groups(h, threshold=0)
    _, exact = np.unique(h, axis=0, return_inverse=True)
    exact = exact.reshape(-1)
    # same partition, group ids numbered by first occurrence
    for k in range(len(h)):
        assert ((ids == ids[k]) == (exact == exact[k])).all()
    firsts = [int(np.nonzero(ids == g)[0][0]) for g in range(ids.max() + 1)]
    assert firsts == sorted(firsts)


def test_blocked_search_matches_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    # small tiles, so that pairs straddle row and column blocks and the diagonal tiles
    monkeypatch.setattr(hamming, "_BLOCK_ROWS", 7)
    monkeypatch.setattr(hamming, "_BLOCK_COLS", 11)
    rng = np.random.default_rng(5)
    h = _random_hashes(60, seed=5)
    for k in range(0, 60, 3):  # plant neighbours at 0..20 bits
        src = int(rng.integers(0, 60))
        h[k] = _flip_bits(h[src], [int(b) for b in rng.choice(128, int(rng.integers(0, 21)), replace=False)])
    for threshold in (0, 5, 16, 40):
        expected = _brute_force_pairs(h, threshold)
        for n_jobs in (1, 3):
            i, j, d = near_duplicate_pairs(h, threshold, n_jobs=n_jobs, method="brute")
            assert set(zip(i.tolist(), j.tolist(), d.tolist())) == expected
            assert len(i) == len(expected)
            assert (np.lexsort((j, i)) == np.arange(len(i))).all()  # sorted
    other = _random_hashes(25, seed=6)
    other[3] = _flip_bits(h[10], [1, 2, 3])
    i, j, d = near_duplicate_pairs(h, 16, other=other)
    assert set(zip(i.tolist(), j.tolist(), d.tolist())) == _brute_force_pairs(h, 16, other)
    assert (10, 3, 3) in set(zip(i.tolist(), j.tolist(), d.tolist()))


def test_report_csv(tmp_path: Path) -> None:
    a = _random_hashes(3, seed=8)
    h = np.stack([a[0], a[1], _flip_bits(a[0], [3]), a[2]])
    report = find_near_duplicates(h, ["p0", "p1", "p2", "p3"], ["A", "B", "A", "C"])
    out = tmp_path / "near_duplicates.csv"
    report.write_csv(out)
    assert out.read_text().splitlines() == ["group,path,label,nearest,distance", "0,p0,A,p2,1", "0,p2,A,p0,1"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="uint64"):
        near_duplicate_groups(np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match="threshold"):
        near_duplicate_pairs(_random_hashes(2), -1)
    with pytest.raises(ValueError, match="paths"):
        find_near_duplicates(_random_hashes(2), ["only one"])
