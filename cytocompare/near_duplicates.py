"""Near-duplicate images: re-encoded, resized or slightly cropped copies of one cell.

Byte-identical files are one *duplicate group* in every split (:mod:`cytocompare.splits`). A
copy that was re-saved as JPEG, rescaled or trimmed by a few pixels has another sha256, so it
would leak across a split. This module finds such copies with a perceptual hash and groups them,
so that a group can be kept on one side of every split like a byte duplicate.

In a run: ``datasets.load_dataset(..., perceptual_hashes=True)`` hashes every image while the data
check decodes it (``LoadedDataset.perceptual_hashes``), and ``splits.make_plan(...,
near_duplicate_hashes=..., near_duplicate_threshold=...)`` merges the groups into its duplicate
groups and keeps the :class:`NearDuplicateReport` (``SplitPlan.near_duplicates``; its rows are
``near_duplicates.csv``). On the 2,800 real cells of ``shared/data/matek-bm`` the default
threshold finds no group (and no pair between them and the 800 cells of ``shared/data/pbc``).

The hash
--------
Each image gets a 128-bit hash: the 64-bit DCT hash (``imagehash.phash``, 8x8) followed by the
64-bit gradient hash (``imagehash.dhash``, 8x8). The distance of two images is the Hamming
distance of the whole 128 bits (phash distance + dhash distance). Two images are near-duplicates
when that distance is at most ``threshold``; groups are the connected components of that
relation (union-find: a chain a~b, b~c puts a, b, c in one group even if a and c are further apart).

Why these and why ``DEFAULT_THRESHOLD = 16`` (measured on the 2,800 real cells of
``shared/data/matek-bm``, 250x250 JPEG; docs/reliability.md has the full table):

* between *different* cells the smallest summed distance over all 3.9 million pairs is 22
  (one pair; 7 pairs <= 24); within a class it is also 22. Neither hash alone separates as
  well: phash8 alone has distinct pairs down to 6, dhash8 down to 5, the 8x8 average hash
  and wavelet hash give distance 0 to different cells (the cells are all a dark blob in the
  centre of a pale field), and a 16x16 phash is too sensitive to cropping.
* a copy re-encoded as JPEG quality 75 is at most 5 away, one resized 250->200->250 at most 7,
  one cropped by 2 % per side (5 px of 250) at most 20 (99 % <= 16), by 4 % per side at most 37
  (49 % <= 16).

16 catches every re-encoded and resized copy and 99 % of the 2 %-cropped ones, and keeps a margin
of 6 bits to the closest pair of different cells. Heavier crops are not reliably caught; a
larger threshold would start to merge different cells (and, by transitivity, chains of them)
on the full 171,374-image set. Blank images (all white or all black) hash alike and form one group.

The pair search (:mod:`cytocompare.hamming`) is exact: a multi-index search (the 128 bits cut
into 9 chunks; two hashes within 16 agree to one bit on at least one chunk, so only hashes that
do are compared), or, when the hashes crowd into few chunk values, the blocked all-pairs XOR +
popcount. Both give the same pairs; at 171,374 hashes the index takes seconds where all pairs
took about 50 CPU-s.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cytocompare.hamming import Method, pairs_within, popcount

__all__ = [
    "DEFAULT_THRESHOLD", "HASH_WORDS", "NearDuplicateGroup", "NearDuplicateReport", "as_hashes", "find_near_duplicates",
    "grey_downscales", "hamming_distance", "hashes_from_downscales", "near_duplicate_groups", "near_duplicate_pairs",
    "perceptual_hash", "perceptual_hashes",
]

DEFAULT_THRESHOLD = 16
"""Largest Hamming distance (of 128 bits) at which two images count as near-duplicates."""

HASH_WORDS = 2
"""A hash is ``HASH_WORDS`` uint64 words: phash (8x8), then dhash (8x8)."""

_HASH_SIZE = 8
_DCT_BATCH = 16


# --------------------------------------------------------------------------------------------
# hashing
# --------------------------------------------------------------------------------------------


def _grey(image: Any) -> Any:
    """The grey PIL image the hashes start from, as imagehash makes it (``convert("L")``)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB").convert("L")
    if isinstance(image, np.ndarray):
        return Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("L")
    from cytocompare.images import check_image

    # a path: the same decoding (and the same BadImageError causes) as every other read
    return check_image(image, then=lambda im: im.convert("L"))


def grey_downscales(grey: Any) -> tuple[np.ndarray, np.ndarray]:
    """The two downscales of a grey PIL image that the hash is computed from, exactly as
    ``imagehash.phash`` (32 x 32) and ``imagehash.dhash`` (9 wide, 8 high) make them: uint8
    arrays of shape (32, 32) and (8, 9). Finish with :func:`hashes_from_downscales`.

    The data check (:func:`cytocompare.datasets.load_dataset`) converts each decoded image to
    grey once and makes these two, then hashes a whole chunk of files at once."""
    import imagehash

    side = _HASH_SIZE * 4  # imagehash.phash's highfreq_factor
    return (np.asarray(grey.resize((side, side), imagehash.ANTIALIAS)),
            np.asarray(grey.resize((_HASH_SIZE + 1, _HASH_SIZE), imagehash.ANTIALIAS)))


def hashes_from_downscales(small: np.ndarray, tiny: np.ndarray) -> np.ndarray:
    """``(k, HASH_WORDS)`` uint64 hashes of k images from their stacked :func:`grey_downscales`
    (``small`` (k, 32, 32), ``tiny`` (k, 8, 9)).

    The same arithmetic as ``imagehash.phash`` and ``imagehash.dhash`` on each image, done for
    a stack at once: the 2-D DCT (``scipy.fftpack.dct`` down the columns, then along the rows,
    as imagehash calls it) of a stack gives every image's coefficients bit for bit as for the
    image alone (checked on 25,000 images in stacks of 1 to 1,000, coefficients compared as
    bytes; a test keeps checking it), the median of each 8 x 8 low-frequency block is numpy's
    median of those 64 values, and the bits are packed row-major, most significant first (the
    order of imagehash's hex string).
    """
    import scipy.fftpack

    k = len(small)
    if k == 0:
        return np.zeros((0, HASH_WORDS), np.uint64)
    small = np.asarray(small)
    # 16 images at a time: the stack's DCT slows down several-fold once it outgrows the cache
    low = np.concatenate([scipy.fftpack.dct(scipy.fftpack.dct(small[s:s + _DCT_BATCH], axis=1), axis=2)
                          [:, :_HASH_SIZE, :_HASH_SIZE] for s in range(0, k, _DCT_BATCH)]).reshape(k, -1)
    p_bits = low > np.median(low, axis=1)[:, None]
    tiny = np.asarray(tiny)
    d_bits = (tiny[:, :, 1:] > tiny[:, :, :-1]).reshape(k, -1)
    words = np.packbits(np.concatenate([p_bits, d_bits], axis=1), axis=1).view(">u8")
    return words.astype(np.uint64)


def perceptual_hash(image: Any) -> np.ndarray:
    """The 128-bit hash of one image (a path, a PIL image, or an (H, W, 3) uint8 array).

    Returns an array of ``HASH_WORDS`` uint64: ``[phash, dhash]`` (``imagehash.phash`` and
    ``imagehash.dhash``, 8 x 8, as two 64-bit words in the order of their hex strings).
    """
    return _hash_chunk([image])[0]


def _hash_chunk(items: Sequence[Any]) -> np.ndarray:
    if not len(items):
        return np.zeros((0, HASH_WORDS), np.uint64)
    small, tiny = zip(*(grey_downscales(_grey(x)) for x in items))
    return hashes_from_downscales(np.stack(small), np.stack(tiny))


def perceptual_hashes(images_or_paths: Iterable[Any], n_jobs: int = 1) -> np.ndarray:
    """Hashes of many images, an ``(n, HASH_WORDS)`` uint64 array in input order.

    ``images_or_paths`` holds paths, PIL images or arrays (an :class:`~cytocompare.images.ImageSet`
    is read through its ``paths`` when it is file-backed). ``n_jobs > 1`` hashes in parallel
    processes (joblib); the result does not depend on it.
    """
    items = _items(images_or_paths)
    if n_jobs == 1 or len(items) < 64:
        return _hash_chunk(items)
    from joblib import Parallel, cpu_count, delayed

    workers = cpu_count() if n_jobs < 0 else n_jobs
    size = max(16, -(-len(items) // (4 * workers)))
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    parts = Parallel(n_jobs=n_jobs)(delayed(_hash_chunk)(c) for c in chunks)
    return np.concatenate(parts)


def _items(images_or_paths: Iterable[Any]) -> list[Any]:
    paths = getattr(images_or_paths, "paths", None)
    if paths is not None and getattr(images_or_paths, "_arrays", None) is None:
        return [str(p) for p in paths]  # a file-backed ImageSet: hash the files as they are
    return list(images_or_paths)


def as_hashes(hashes: Any) -> np.ndarray:
    """Validate and return hashes as a C-contiguous ``(n, HASH_WORDS)`` uint64 array."""
    h = np.asarray(hashes)
    if h.size == 0:
        return np.zeros((0, HASH_WORDS), np.uint64)
    if h.ndim != 2 or h.shape[1] != HASH_WORDS or h.dtype != np.uint64:
        raise ValueError(f"hashes must be an (n, {HASH_WORDS}) uint64 array (perceptual_hashes), "
                         f"got {h.dtype} {h.shape}")
    return np.ascontiguousarray(h)


def hamming_distance(a: np.ndarray, b: np.ndarray) -> int:
    """Distance (0-128) between two hashes."""
    return int(popcount(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))).sum())


# --------------------------------------------------------------------------------------------
# pair search
# --------------------------------------------------------------------------------------------


def near_duplicate_pairs(hashes: Any, threshold: int = DEFAULT_THRESHOLD, other: Any = None,
                         n_jobs: int = 1, method: Method = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs within ``threshold``, as three int64 arrays ``(i, j, distance)``, sorted.

    With ``other=None``: pairs ``i < j`` inside ``hashes``. With ``other``: pairs of ``hashes[i]``
    and ``other[j]`` (e.g. the training set against an external test set). ``n_jobs > 1`` runs
    in threads (numpy releases the GIL). ``method`` (:func:`cytocompare.hamming.pairs_within`):
    ``auto`` takes the cheaper of the all-pairs tiles and the multi-index search; neither it
    nor ``n_jobs`` changes the result.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    a = as_hashes(hashes)
    return pairs_within(a, None if other is None else as_hashes(other), threshold, n_jobs=n_jobs, method=method)


# --------------------------------------------------------------------------------------------
# grouping
# --------------------------------------------------------------------------------------------


def _components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Group id per node (union-find via connected components), numbered by smallest member."""
    if n == 0:
        return np.zeros(0, np.int64)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # renumber deterministically: group k is the k-th group in order of its first image
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(np.argsort(first))] = np.arange(len(first))
    return rank[labels]


def near_duplicate_groups(hashes: Any, threshold: int = DEFAULT_THRESHOLD, n_jobs: int = 1) -> np.ndarray:
    """A group id per image (int64, 0..k-1, numbered in order of each group's first image).

    Images in one group are linked by a chain of pairs at distance <= ``threshold``; an image
    without a near-duplicate is a group of its own. ``threshold=0`` groups identical hashes.
    """
    h = as_hashes(hashes)
    i, j, _ = near_duplicate_pairs(h, threshold, n_jobs=n_jobs)
    return _components(len(h), i, j)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NearDuplicateGroup:
    """One group of more than one near-identical image."""

    group: int
    indices: tuple[int, ...]
    paths: tuple[str, ...]
    labels: tuple[str, ...] | None
    pairs: tuple[tuple[int, int, int], ...]  # (index, index, distance) of the linking pairs

    @property
    def max_distance(self) -> int:
        return max(d for _, _, d in self.pairs)

    @property
    def mixed_labels(self) -> bool:
        """True when the copies carry different labels (a labelling conflict to look at)."""
        return self.labels is not None and len(set(self.labels)) > 1


@dataclass(frozen=True)
class NearDuplicateReport:
    """What :func:`find_near_duplicates` found: a group id per image and the groups of > 1."""

    threshold: int
    group_ids: np.ndarray
    groups: tuple[NearDuplicateGroup, ...] = field(default=())

    @property
    def n_images(self) -> int:
        return len(self.group_ids)

    @property
    def n_in_groups(self) -> int:
        return sum(len(g.indices) for g in self.groups)

    def summary(self) -> str:
        if not self.groups:
            return f"no near-duplicates among {self.n_images} images (perceptual hash, threshold {self.threshold})"
        mixed = sum(g.mixed_labels for g in self.groups)
        text = (f"{len(self.groups)} near-duplicate groups ({self.n_in_groups} of {self.n_images} images; "
                f"perceptual hash, threshold {self.threshold}); each group stays on one side of every split")
        if mixed:
            text += f"; {mixed} of them have copies with different labels"
        return text

    def rows(self) -> list[dict[str, Any]]:
        """One row per image in a group: group, path, label, nearest member and its distance."""
        rows = []
        for g in self.groups:
            # one pass over the linking pairs: a large group (e.g. many blank images) stays linear
            best: dict[int, tuple[int, int]] = {}  # index -> (distance, nearest other index)
            for a, b, d in g.pairs:
                for me, other in ((a, b), (b, a)):
                    if me not in best or (d, other) < best[me]:
                        best[me] = (d, other)
            position = {idx: pos for pos, idx in enumerate(g.indices)}
            for pos, idx in enumerate(g.indices):
                dist, other = best[idx]  # every member of a group of > 1 is on a linking pair
                rows.append({
                    "group": g.group, "path": g.paths[pos], "label": "" if g.labels is None else g.labels[pos],
                    "nearest": g.paths[position[other]], "distance": dist,
                })
        return rows

    def write_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["group", "path", "label", "nearest", "distance"])
            writer.writeheader()
            writer.writerows(self.rows())


def find_near_duplicates(hashes: Any, paths: Sequence[str] | None = None, labels: Sequence[str] | None = None,
                         threshold: int = DEFAULT_THRESHOLD, n_jobs: int = 1) -> NearDuplicateReport:
    """Group ``hashes`` (:func:`perceptual_hashes`) and describe the groups of more than one image.

    ``paths`` (default ``#i``) and ``labels`` name the images in the report.
    """
    h = as_hashes(hashes)
    n = len(h)
    names = [f"#{k}" for k in range(n)] if paths is None else [str(p) for p in paths]
    labs = None if labels is None else [str(x) for x in labels]
    if len(names) != n or (labs is not None and len(labs) != n):
        raise ValueError(f"{n} hashes but {len(names)} paths / {None if labs is None else len(labs)} labels")
    i, j, d = near_duplicate_pairs(h, threshold, n_jobs=n_jobs)
    ids = _components(n, i, j)
    groups = []
    if len(i):
        # members and linking pairs of each group, by sorting once (not one scan per group)
        order = np.argsort(ids, kind="stable")
        starts = np.searchsorted(ids[order], np.arange(int(ids.max()) + 2))
        pair_group = ids[i]
        p_order = np.argsort(pair_group, kind="stable")
        p_starts = np.searchsorted(pair_group[p_order], np.arange(int(ids.max()) + 2))
        for gid in np.unique(pair_group):
            members = tuple(int(k) for k in order[starts[gid]:starts[gid + 1]])
            sel = p_order[p_starts[gid]:p_starts[gid + 1]]
            groups.append(NearDuplicateGroup(
                group=int(gid), indices=members, paths=tuple(names[k] for k in members),
                labels=None if labs is None else tuple(labs[k] for k in members),
                pairs=tuple((int(a), int(b), int(c)) for a, b, c in zip(i[sel], j[sel], d[sel])),
            ))
    return NearDuplicateReport(threshold=threshold, group_ids=ids, groups=tuple(groups))
