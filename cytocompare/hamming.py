"""Pairs of bit-string hashes within a Hamming distance: all-pairs tiles or a multi-index search.

The near-duplicate search (:mod:`cytocompare.near_duplicates`) needs every pair of 128-bit hashes
at distance <= 16 among 171,374 images: 1.5 x 10^10 pairs. Two exact methods give the same pairs:

``brute``
    Blocked, vectorised XOR + popcount over all pairs (tiles of ``_BLOCK_ROWS x _BLOCK_COLS``),
    with a first pass on word 0 alone (the summed distance is at least that word's distance).
    O(n^2), about 50 CPU-s at 171k; cheap for small sets and for hashes that are all alike.
``index``
    Multi-index hashing (Norouzi et al., 2012). The bits are cut into ``m`` chunks with
    ``m * (r + 1) > threshold``: two hashes within ``threshold`` then agree to within ``r`` bits
    on at least one chunk (pigeonhole: otherwise every chunk differs by ``r + 1`` or more, in sum
    more than ``threshold``). So it is enough to compare the hashes whose chunk values are equal
    (``r = 0``) or one bit apart (``r = 1``) on some chunk: they are found by sorting each
    chunk's values, and each candidate is then checked on the whole hash. At threshold 16,
    ``r = 1`` gives 9 chunks of 14-15 bits; on 171k well-spread hashes that is about 10^8
    candidates instead of 1.5 x 10^10 pairs.

A pair can agree on several chunks; it is kept only from the first chunk on which it is within
``r`` (and, in that chunk, it matches one probe only), so every pair comes out exactly once
without a set of seen pairs. ``auto`` counts the candidates of each chunking exactly from the
chunk values' histograms (cheap) and takes the method with the lower estimated cost, so hashes
that crowd into few chunk values (many near-blank images) fall back to the tiles. The choice
only changes the time: both methods return the same sorted pairs (tests compare them with a
brute-force reference, at distances of exactly the threshold and one above).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np

__all__ = ["Method", "pairs_within", "popcount"]

Method = Literal["auto", "brute", "index"]
Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]

_BLOCK_ROWS = 1024
_BLOCK_COLS = 2048
# the index's chunks are at most this wide (chunk values are sorted as uint64; wider chunks
# need no index: the hashes are then compared on nearly whole words anyway)
_MAX_CHUNK_BITS = 32
# candidates expanded at once (bounds memory: a few int64 arrays of this length)
_BATCH = 1 << 21
# estimated cost of one candidate of the index relative to one pair of the tiles (gathers and
# several passes per candidate against one XOR + popcount + compare per pair in the tiles;
# measured on the development VM: about 25 ns against 3.5 ns), and of one hash per probe
# (the per-probe expansion of the runs)
_CANDIDATE_COST = 7.0
_PROBE_COST = 2.0


if hasattr(np, "bitwise_count"):  # numpy >= 2.0
    def popcount(x: np.ndarray) -> np.ndarray:
        """Set bits of every element (uint8 result)."""
        return np.bitwise_count(x)
else:  # pragma: no cover - numpy 1.26
    _BYTE_COUNTS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

    def popcount(x: np.ndarray) -> np.ndarray:
        """Set bits of every element (uint8 result)."""
        x = np.ascontiguousarray(x)
        return _BYTE_COUNTS[x.view(np.uint8)].reshape(*x.shape, x.itemsize).sum(-1, dtype=np.uint8)


def pairs_within(a: np.ndarray, b: np.ndarray | None, threshold: int, *, n_jobs: int = 1,
                 method: Method = "auto") -> Pairs:
    """All pairs within ``threshold`` bits, as int64 arrays ``(i, j, distance)`` sorted by (i, j).

    ``a`` and ``b`` are C-contiguous ``(n, words)`` uint64 arrays. With ``b=None``: pairs
    ``i < j`` inside ``a``; else pairs of ``a[i]`` and ``b[j]``. ``n_jobs`` threads (numpy
    releases the GIL); neither it nor ``method`` changes the result.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    if method not in ("auto", "brute", "index"):
        raise ValueError(f"method must be 'auto', 'brute' or 'index', not {method!r}")
    if b is not None and b.shape[1] != a.shape[1]:
        raise ValueError(f"hashes of {a.shape[1]} and {b.shape[1]} words cannot be compared")
    n_bits = 64 * a.shape[1]
    if len(a) == 0 or (b is not None and len(b) == 0):
        return _empty()
    plan = None
    if method != "brute":
        plan = _best_index(a, b, threshold)
        if plan is None and method == "index":
            raise ValueError(f"no multi-index chunking for threshold {threshold} on {n_bits} bits "
                             f"(chunks would be wider than {_MAX_CHUNK_BITS} bits)")
    workers = (os.cpu_count() or 1) if n_jobs < 0 else max(1, n_jobs)
    if plan is not None and (method == "index" or plan.cost < _brute_cost(a, b)):
        parts = _index_pairs(a, b, threshold, plan, workers)
    else:
        parts = _brute_pairs(a, b, threshold, workers)
    return _sorted(parts)


# --------------------------------------------------------------------------------------------
# all pairs, in tiles
# --------------------------------------------------------------------------------------------


def _brute_cost(a: np.ndarray, b: np.ndarray | None) -> float:
    return len(a) * (len(a) - 1) / 2 if b is None else float(len(a)) * len(b)


def _tile_pairs(a: np.ndarray, b: np.ndarray, threshold: int) -> Pairs:
    """(i, j, distance) of all pairs of a tile within ``threshold`` (indices into a and b)."""
    # first pass on word 0 only: the summed distance is at least word 0's distance
    d0 = popcount(np.bitwise_xor(a[:, None, 0], b[None, :, 0]))
    i, j = np.nonzero(d0 <= threshold)
    if i.size == 0:
        return _empty()
    d = d0[i, j].astype(np.int64)
    for w in range(1, a.shape[1]):
        d += popcount(a[i, w] ^ b[j, w])
    keep = d <= threshold
    return i[keep], j[keep], d[keep]


def _brute_pairs(a: np.ndarray, b: np.ndarray | None, threshold: int, workers: int) -> list[Pairs]:
    other = a if b is None else b

    def row_block(r0: int) -> Pairs:
        ra = a[r0:r0 + _BLOCK_ROWS]
        parts = []
        for c0 in range(r0 if b is None else 0, len(other), _BLOCK_COLS):  # upper triangle for b=None
            i, j, d = _tile_pairs(ra, other[c0:c0 + _BLOCK_COLS], threshold)
            i, j = i + r0, j + c0
            if b is None:
                keep = i < j
                i, j, d = i[keep], j[keep], d[keep]
            parts.append((i, j, d))
        return _concat(parts)

    return _map(row_block, range(0, len(a), _BLOCK_ROWS), workers)


# --------------------------------------------------------------------------------------------
# multi-index hashing
# --------------------------------------------------------------------------------------------


class _Chunk:
    """One chunk's values of both sides, sorted, with the start and size of every value's run."""

    def __init__(self, a: np.ndarray, b: np.ndarray | None, start: int, stop: int) -> None:
        self.start, self.stop = start, stop
        self.a = _Side(_chunk_values(a, start, stop))
        self.b = self.a if b is None else _Side(_chunk_values(b, start, stop))


class _Side:
    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        # int32 positions: half the memory traffic of int64 in the candidates' gathers
        self.order = np.argsort(values, kind="stable").astype(np.int32 if len(values) < 2**31 else np.int64)
        s = values[self.order]
        first = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.zeros(0, np.int64)
        self.keys = s[first]  # distinct values, sorted
        self.starts = first  # position of each in the sorted order
        self.counts = np.diff(np.r_[first, len(s)])


class _IndexPlan:
    def __init__(self, radius: int, chunks: list[_Chunk], cost: float) -> None:
        self.radius, self.chunks, self.cost = radius, chunks, cost


def _chunk_bounds(n_bits: int, m: int) -> list[tuple[int, int]]:
    """``m`` consecutive bit ranges of near-equal width covering ``n_bits``."""
    edges = [round(k * n_bits / m) for k in range(m + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _chunk_values(h: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Bits ``start..stop-1`` of every hash (bit k is bit k % 64 of word k // 64), as uint64."""
    width = stop - start
    w0, s0 = divmod(start, 64)
    v = h[:, w0] >> np.uint64(s0)
    if s0 + width > 64:  # the chunk continues in the next word
        v = v | (h[:, w0 + 1] << np.uint64(64 - s0))
    return v & np.uint64((1 << width) - 1)


def _probes(chunk: _Chunk, radius: int) -> list[int]:
    """The XOR masks of one chunk: 0, then (radius 1) each single bit."""
    return [0] + ([1 << k for k in range(chunk.stop - chunk.start)] if radius else [])


def _bucket_pairs(chunk: _Chunk, mask: int, self_pairs: bool) -> tuple[np.ndarray, np.ndarray]:
    """(run of a, run of b) whose values differ by exactly ``mask``, each unordered pair of
    runs once when both sides are one set."""
    ka, kb = chunk.a.keys, chunk.b.keys
    if self_pairs and mask == 0:
        ra = np.flatnonzero(chunk.a.counts > 1)
        return ra, ra
    qa = np.arange(len(ka))
    if self_pairs:  # the run whose value has the mask's bit clear asks for the one with it set
        qa = qa[(ka & np.uint64(mask)) == 0]
    target = ka[qa] ^ np.uint64(mask)
    pos = np.minimum(np.searchsorted(kb, target), max(len(kb) - 1, 0))
    hit = kb[pos] == target if len(kb) else np.zeros(len(target), bool)
    return qa[hit], pos[hit]


def _estimate(chunks: list[_Chunk], radius: int, self_pairs: bool, n: int) -> float:
    """Exact candidate count of a chunking (from the runs), plus the probes' sorting work."""
    total = 0.0
    probes = 0
    for ch in chunks:
        for mask in _probes(ch, radius):
            ra, rb = _bucket_pairs(ch, mask, self_pairs)
            ca, cb = ch.a.counts[ra].astype(np.float64), ch.b.counts[rb].astype(np.float64)
            total += float((ca * (ca - 1) / 2).sum() if self_pairs and mask == 0 else (ca * cb).sum())
            probes += 1
    return total * _CANDIDATE_COST + probes * n * _PROBE_COST


def _index_plan(a: np.ndarray, b: np.ndarray | None, threshold: int, radius: int) -> _IndexPlan | None:
    """The chunking for probe radius 0 or 1 with its estimated cost, or None if its chunks would
    be too wide."""
    n_bits = 64 * a.shape[1]
    m = threshold // (radius + 1) + 1  # m * (radius + 1) > threshold
    if m > n_bits or -(-n_bits // m) > _MAX_CHUNK_BITS:
        return None
    chunks = [_Chunk(a, b, s, e) for s, e in _chunk_bounds(n_bits, m)]
    return _IndexPlan(radius, chunks, _estimate(chunks, radius, b is None, len(a) + (0 if b is None else len(b))))


def _best_index(a: np.ndarray, b: np.ndarray | None, threshold: int) -> _IndexPlan | None:
    """The cheaper chunking (probe radius 1 or 0) by estimated cost, or None if none fits."""
    plans = [p for p in (_index_plan(a, b, threshold, r) for r in (1, 0)) if p is not None]
    return min(plans, key=lambda p: p.cost) if plans else None


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + c)`` for every (s, c)."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    offsets = np.cumsum(counts) - counts
    return np.repeat(starts.astype(np.int64) - offsets, counts) + np.arange(total, dtype=np.int64)


def _index_pairs(a: np.ndarray, b: np.ndarray | None, threshold: int, plan: _IndexPlan,
                 workers: int) -> list[Pairs]:
    other = a if b is None else b
    words_a = [np.ascontiguousarray(a[:, w]) for w in range(a.shape[1])]
    words_b = words_a if b is None else [np.ascontiguousarray(other[:, w]) for w in range(a.shape[1])]
    self_pairs = b is None
    radius = plan.radius

    def probe(job: tuple[int, int]) -> Pairs:
        c, mask = job
        ch = plan.chunks[c]
        ra, rb = _bucket_pairs(ch, mask, self_pairs)
        # every element of each run of a, with the run of b it is compared with
        a_counts = ch.a.counts[ra]
        pos_a = _ranges(ch.a.starts[ra], a_counts)
        b_start = np.repeat(ch.b.starts[rb], a_counts)
        if self_pairs and mask == 0:  # within one run: each element with the ones before it
            b_count = pos_a - b_start
        else:
            b_count = np.repeat(ch.b.counts[rb], a_counts).astype(np.int64)
        parts = []
        for lo, hi in _batches(b_count):
            i = ch.a.order[np.repeat(pos_a[lo:hi], b_count[lo:hi])]
            j = ch.b.order[_ranges(b_start[lo:hi], b_count[lo:hi])]
            # word by word, dropping a candidate as soon as its distance so far exceeds the threshold
            d = np.zeros(len(i), np.int64)
            for wa, wb in zip(words_a, words_b):
                d += popcount(wa[i] ^ wb[j])
                keep = d <= threshold
                i, j, d = i[keep], j[keep], d[keep]
            # a pair within `radius` on an earlier chunk was found there
            for earlier in plan.chunks[:c]:
                keep = popcount(earlier.a.values[i] ^ earlier.b.values[j]) > radius
                i, j, d = i[keep], j[keep], d[keep]
            if self_pairs:
                i, j = np.minimum(i, j), np.maximum(i, j)
            parts.append((i, j, d))
        return _concat(parts)

    jobs = [(c, mask) for c, ch in enumerate(plan.chunks) for mask in _probes(ch, radius)]
    return _map(probe, jobs, workers)


def _batches(counts: np.ndarray) -> Iterable[tuple[int, int]]:
    """Consecutive element ranges holding at most ``_BATCH`` candidates (at least one element)."""
    if len(counts) == 0:
        return
    ends = np.cumsum(counts)
    lo = 0
    while lo < len(counts):
        base = ends[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, base + _BATCH, side="right")))
        yield lo, hi
        lo = hi


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _map(fn: Callable, jobs: Iterable, workers: int) -> list:
    jobs = list(jobs)
    if workers == 1 or len(jobs) < 2:
        return [fn(j) for j in jobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, jobs))


def _empty() -> Pairs:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)


def _concat(parts: list[Pairs]) -> Pairs:
    if not parts:
        return _empty()
    return tuple(np.concatenate([p[k] for p in parts]).astype(np.int64) for k in range(3))  # type: ignore[return-value]


def _sorted(parts: list[Pairs]) -> Pairs:
    i, j, d = _concat(parts)
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]
