"""A plain, readable mRMR (Peng, Long & Ding 2005), written from the paper, for the tests only.

It shares no code with ``cytocompare_classical.mrmr``: mutual information from ``np.unique``
counts, each round's mean redundancy taken afresh over the picked set (pairwise MIs memoised),
no kernels, no incremental sums. It is
slow (fine for tests) and says where the choice is *ambiguous*: the fast implementation breaks
exact ties the way Peng's C++ does (an unstable sort of float32 relevances, then the first
maximum), which a reference written from the paper need not copy, so the tests compare picks up
to the first round whose winner is not clear by a margin.

Peng's incremental search, for a discrete class ``c`` and discrete features ``f``:

1. relevance ``I(f; c)`` of every feature; the candidates are the ``pool_size`` most relevant;
2. the first pick is the most relevant feature;
3. each further pick maximises, over the candidates not yet picked,
   MID: ``I(f; c) - mean_{s in S} I(f; s)``  or  MIQ: ``I(f; c) / (mean_{s in S} I(f; s) + 1e-4)``
   where ``S`` is the set already picked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIQ_EPS = 1e-4
#: scores closer than this (bits) are treated as a tie the two implementations may break differently
TIE = 1e-9


def mutual_information_bits(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in I(a; b) in bits: sum over observed (u, v) of p(u,v) log2(p(u,v) / (p(u) p(v)))."""
    n = len(a)
    _, a_codes = np.unique(a, return_inverse=True)
    _, b_codes = np.unique(b, return_inverse=True)
    na, nb = a_codes.max() + 1, b_codes.max() + 1
    joint = np.bincount(a_codes * nb + b_codes, minlength=na * nb).reshape(na, nb)
    p_ab = joint / n
    p_a = p_ab.sum(axis=1, keepdims=True)
    p_b = p_ab.sum(axis=0, keepdims=True)
    nz = p_ab > 0
    return float(np.sum(p_ab[nz] * np.log2(p_ab[nz] / (p_a @ p_b)[nz])))


@dataclass
class Selection:
    picks: list[int]
    #: rounds (0 = the first pick) whose winner is clear; picks beyond are not comparable
    clear_rounds: int


def peng_mrmr(Xd: np.ndarray, y: np.ndarray, k: int, method: str, pool_size: int | None = 5000) -> Selection:
    """Peng's mRMR on discrete ``Xd`` (n, p) and labels ``y``: ``k`` column indices in pick order."""
    assert method in ("MID", "MIQ")
    p = Xd.shape[1]
    relevance = np.array([mutual_information_bits(Xd[:, j], y) for j in range(p)])
    # Peng's C++ ranks candidates by relevance stored as float; ties there are ambiguous here
    rank_key = relevance.astype(np.float32)
    by_relevance = sorted(range(p), key=lambda j: -rank_key[j])
    pool_len = p if pool_size is None else min(pool_size, p)
    pool = by_relevance[:pool_len]
    clear = True
    if pool_len < p and rank_key[by_relevance[pool_len - 1]] == rank_key[by_relevance[pool_len]]:
        clear = False  # which of the tied features make the pool is the C++ sort's choice
    k = min(k, pool_len)
    picks = [pool[0]]
    if pool_len > 1 and rank_key[pool[0]] == rank_key[pool[1]]:
        clear = False
    clear_rounds = 1 if clear else 0
    pair_mi: dict[tuple[int, int], float] = {}

    def redundancy_term(f: int, s: int) -> float:
        if (f, s) not in pair_mi:
            pair_mi[f, s] = mutual_information_bits(Xd[:, f], Xd[:, s])
        return pair_mi[f, s]

    for _ in range(1, k):
        best, best_score, runner_up = None, -np.inf, -np.inf
        for f in pool:
            if f in picks:
                continue
            redundancy = np.mean([redundancy_term(f, s) for s in picks])
            if method == "MID":
                score = relevance[f] - redundancy
            else:
                score = relevance[f] / (redundancy + MIQ_EPS)
            if score > best_score:
                best, best_score, runner_up = f, score, best_score
            elif score > runner_up:
                runner_up = score
        picks.append(best)
        if clear and best_score - runner_up > TIE * max(1.0, abs(best_score)):
            clear_rounds += 1
        else:
            clear = False
    return Selection(picks, clear_rounds)
