"""The exact pair search of cytocompare.hamming: the multi-index search and the all-pairs tiles
against a brute-force reference (a full distance matrix), at the threshold and one above."""

from __future__ import annotations

import numpy as np
import pytest

import cytocompare.hamming as hm
from cytocompare.hamming import pairs_within

THRESHOLD = 16


def _random(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(np.uint64).max, size=(n, 2), dtype=np.uint64, endpoint=True)


def _flip(h: np.ndarray, bits: list[int]) -> np.ndarray:
    out = h.copy()
    for b in bits:
        out[b // 64] ^= np.uint64(1) << np.uint64(b % 64)
    return out


def _reference(a: np.ndarray, threshold: int, b: np.ndarray | None = None) -> set[tuple[int, int, int]]:
    """Every pair from the full distance matrix (no tiles, no index)."""
    other = a if b is None else b
    x = np.ascontiguousarray(a[:, None, :] ^ other[None, :, :])
    d = np.unpackbits(x.view(np.uint8), axis=-1).reshape(len(a), len(other), -1).sum(-1, dtype=np.int64)
    i, j = np.nonzero(d <= threshold)
    if b is None:
        i, j = i[i < j], j[i < j]
    return set(zip(i.tolist(), j.tolist(), d[i, j].tolist()))


def _as_set(pairs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> set[tuple[int, int, int]]:
    i, j, d = pairs
    assert i.dtype == j.dtype == d.dtype == np.int64
    assert (np.lexsort((j, i)) == np.arange(len(i))).all(), "pairs are not sorted by (i, j)"
    out = set(zip(i.tolist(), j.tolist(), d.tolist()))
    assert len(out) == len(i), "a pair came out twice"
    return out


def _spread(base: np.ndarray, distance: int, rng: np.random.Generator, per_chunk: list[int]) -> np.ndarray:
    """``base`` with ``distance`` bits flipped, ``per_chunk[c]`` of them in chunk c of the
    9-chunk index (the hardest case for the pigeonhole: no chunk equal)."""
    bits: list[int] = []
    for (s, e), k in zip(hm._chunk_bounds(128, 9), per_chunk):
        bits += [int(x) for x in rng.choice(np.arange(s, e), k, replace=False)]
    assert len(bits) == distance
    return _flip(base, bits)


def _planted(n: int, seed: int) -> np.ndarray:
    """Random hashes with neighbours planted at 0-20 bits, at exactly 16 and 17 with the flips
    spread over all 9 chunks (two chunks one bit apart, or only one), on the chunk that spans
    both words (bits 57-70), and repeated hashes (many equal chunk values)."""
    rng = np.random.default_rng(seed)
    h = _random(n, seed)
    k = 0
    for _ in range(n // 6):
        h[k] = _flip(h[int(rng.integers(0, n))], [int(b) for b in rng.choice(128, int(rng.integers(0, 21)), replace=False)])
        k += 1
    # distance 16 = 7 chunks x 2 + 2 chunks x 1; 17 = 8 x 2 + 1; 18 = 9 x 2 (no chunk within one bit)
    for counts in ([2, 2, 2, 2, 2, 2, 2, 1, 1], [1, 2, 2, 2, 2, 2, 2, 2, 1], [2, 2, 2, 2, 2, 2, 2, 2, 1],
                   [2, 2, 2, 1, 2, 2, 2, 2, 2], [2, 2, 2, 2, 2, 2, 2, 2, 2], [0, 0, 8, 0, 0, 0, 8, 0, 0]):
        for _ in range(4):
            h[k] = _spread(h[int(rng.integers(k + 1, n))], sum(counts), rng, counts)
            k += 1
    for straddle in ([57, 58, 63, 64, 65, 70], list(range(57, 71)) + [0, 127]):  # 6 and 16 bits
        h[k] = _flip(h[k + 1], straddle)
        k += 1
    h[k:k + 12] = h[k + 12]  # 13 equal hashes
    return h


@pytest.mark.parametrize("threshold", [0, 3, 5, 15, 16, 17, 40])
def test_every_method_gives_the_reference_pairs(threshold: int) -> None:
    h = _planted(600, seed=threshold)
    expected = _reference(h, threshold)
    if threshold in (15, 16, 17):  # the planted pairs at 16 and 17 are there, the ones at 18 are not
        assert {16, 17} <= {d for _, _, d in _reference(h, 17)}
    for method in ("brute", "auto", "index"):
        if method == "index" and threshold < 3:  # chunks wider than 32 bits: no index
            with pytest.raises(ValueError, match="no multi-index chunking"):
                pairs_within(h, None, threshold, method=method)
            continue
        for n_jobs in (1, 2):
            assert _as_set(pairs_within(h, None, threshold, n_jobs=n_jobs, method=method)) == expected, (method, n_jobs)


@pytest.mark.parametrize("radius", [0, 1])
def test_both_chunkings_give_the_reference_pairs(radius: int, monkeypatch: pytest.MonkeyPatch) -> None:
    h = _planted(500, seed=11 + radius)
    plan = hm._index_plan(h, None, THRESHOLD, radius)
    assert plan is not None and len(plan.chunks) == (17 if radius == 0 else 9)
    expected = _reference(h, THRESHOLD)
    assert {d for _, _, d in expected} >= {0, 16}
    assert _as_set(hm._sorted(hm._index_pairs(h, None, THRESHOLD, plan, 1))) == expected
    # small batches: the expansion of one probe is cut inside runs and between them
    monkeypatch.setattr(hm, "_BATCH", 7)
    assert _as_set(hm._sorted(hm._index_pairs(h, None, THRESHOLD, plan, 2))) == expected


@pytest.mark.parametrize("radius", [0, 1])
def test_two_sets(radius: int) -> None:
    a = _planted(300, seed=21)
    rng = np.random.default_rng(22)
    b = _random(200, seed=23)
    for k, d in enumerate([0, 1, 15, 16, 17, 18, 16, 17]):
        b[k] = _flip(a[3 * k], [int(x) for x in rng.choice(128, d, replace=False)])
    b[20:30] = a[5]  # repeated on the other side
    b[30] = _spread(a[7], 16, rng, [2, 2, 2, 2, 2, 2, 2, 1, 1])
    b[31] = _spread(a[8], 17, rng, [2, 2, 2, 2, 2, 2, 2, 2, 1])
    expected = _reference(a, THRESHOLD, b)
    assert (7, 30, 16) in expected and not any(p[:2] == (8, 31) for p in expected)
    plan = hm._index_plan(a, b, THRESHOLD, radius)
    assert _as_set(hm._sorted(hm._index_pairs(a, b, THRESHOLD, plan, 1))) == expected
    for method in ("brute", "auto", "index"):
        assert _as_set(pairs_within(a, b, THRESHOLD, method=method)) == expected


def test_tiles_straddle_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # small tiles, so that pairs straddle row and column blocks and the diagonal tiles
    monkeypatch.setattr(hm, "_BLOCK_ROWS", 7)
    monkeypatch.setattr(hm, "_BLOCK_COLS", 11)
    h = _planted(120, seed=31)
    for threshold in (0, 16, 40):
        assert _as_set(pairs_within(h, None, threshold, method="brute", n_jobs=3)) == _reference(h, threshold)


def test_auto_takes_the_index_for_spread_hashes_and_the_tiles_for_crowded_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    spread = _planted(5000, seed=41)
    crowded = np.repeat(_random(3, seed=42), 200, axis=0)  # 3 values, 200 copies each
    calls: list[str] = []
    brute, index = hm._brute_pairs, hm._index_pairs
    monkeypatch.setattr(hm, "_brute_pairs", lambda *a: calls.append("brute") or brute(*a))
    monkeypatch.setattr(hm, "_index_pairs", lambda *a: calls.append("index") or index(*a))
    pairs_within(spread, None, THRESHOLD)
    assert calls == ["index"]
    got = _as_set(pairs_within(crowded, None, THRESHOLD))
    assert calls == ["index", "brute"]
    assert got == _reference(crowded, THRESHOLD) and len(got) == 3 * 200 * 199 // 2


def test_empty_and_bad_arguments() -> None:
    h = _random(5, seed=1)
    empty = np.zeros((0, 2), np.uint64)
    for method in ("brute", "index", "auto"):
        assert all(len(x) == 0 for x in pairs_within(empty, None, THRESHOLD, method=method))
        assert all(len(x) == 0 for x in pairs_within(h, empty, THRESHOLD, method=method))
    assert _as_set(pairs_within(h[:1], None, THRESHOLD, method="index")) == set()
    with pytest.raises(ValueError, match="threshold"):
        pairs_within(h, None, -1)
    with pytest.raises(ValueError, match="method"):
        pairs_within(h, None, 3, method="fast")  # type: ignore[arg-type]
