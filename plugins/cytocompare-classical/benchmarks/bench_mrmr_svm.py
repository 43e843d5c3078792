"""Benchmark: native mRMR vs pymrmr (same discretised input), native scaling, SVM fit times.

Run: .venv/bin/python plugins/cytocompare-classical/benchmarks/bench_mrmr_svm.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import make_classification

from cytocompare_classical.discretize import apply_thresholds, fit_thresholds
from cytocompare_classical.mrmr import _import_pymrmr, mrmr_select, pymrmr_select
from cytocompare_classical.svm import NystroemSVM, RBFSVM


def _data(n: int, p: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Continuous features with 7 classes, some informative and redundant columns, then Peng's
    3-state discretisation (mean ± 1 sd)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n)
    X = rng.normal(size=(n, p)).astype(np.float32)
    m = min(20, p // 4)
    X[:, :m] += 0.5 * y[:, None]
    X[:, m:2 * m] = X[:, :m] + rng.normal(scale=0.5, size=(n, m))
    return apply_thresholds(X, fit_thresholds(X), "sigma"), y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    args = ap.parse_args()

    try:
        _import_pymrmr()
        have_pymrmr = True
    except ImportError as exc:
        have_pymrmr = False
        print(f"note: pymrmr not available ({exc}); only native timings are shown")

    # warm the numba kernels (JIT / cache load) so the first row is not charged for it
    mrmr_select(*_data(50, 20), 3)

    sizes = [(200, 200), (300, 300)] if args.quick else [(500, 500), (1000, 1000), (1000, 2000)]
    print("\nmRMR, K=10, MIQ, same discretised input (3 states)")
    print(f"{'n x p':>12} {'native s':>9} {'pymrmr s':>9} {'speed-up':>9} {'identical':>9}")
    for n, p in sizes:
        Xd, y = _data(n, p)
        t = time.perf_counter()
        nat = mrmr_select(Xd, y, 10, "MIQ")
        t_nat = time.perf_counter() - t
        if have_pymrmr:
            t = time.perf_counter()
            ref = pymrmr_select(Xd, y, 10, "MIQ")
            t_ref = time.perf_counter() - t
            print(f"{f'{n}x{p}':>12} {t_nat:9.3f} {t_ref:9.2f} {t_ref / t_nat:8.0f}x {str(nat == ref):>9}")
        else:
            print(f"{f'{n}x{p}':>12} {t_nat:9.3f} {'-':>9} {'-':>9} {'-':>9}")

    print("\nnative scaling (cost ~ K·p·n after one O(p·n) relevance pass)")
    runs = [(5000, 1500, 10), (5000, 1500, 40)] if args.quick else [(20000, 6000, 10), (20000, 6000, 50)]
    per_unit = []
    for n, p, k in runs:
        Xd, y = _data(n, p, seed=1)
        t = time.perf_counter()
        mrmr_select(Xd, y, k, "MIQ", pool_size=None)
        dt = time.perf_counter() - t
        per_unit.append(dt / (k * p * n))
        print(f"  n={n} p={p} K={k}: {dt:.2f} s  ({dt / (k * p * n) * 1e9:.2f} ns per K·p·n)")
    ns = max(per_unit)
    for k in (100, 500):
        print(f"  extrapolated paper scale n=120000 p=6000 K={k}: ~{ns * k * 6000 * 120000 / 60:.1f} min")

    print("\nSVM fit on 2000 x 100 (7 classes, make_classification), 70/30 split")
    X, y = make_classification(2000, 100, n_informative=40, n_redundant=20, n_classes=7,
                               n_clusters_per_class=1, random_state=0)
    y = np.array(list("ABCDEFG"))[y]
    Xtr, ytr, Xte, yte = X[:1400], y[:1400], X[1400:], y[1400:]
    for name, est in [
        ("RBF, no grid", RBFSVM(param_grid=None)),
        ("RBF, 3x3 grid, cv=3", RBFSVM()),
        ("Nystroem m=300", NystroemSVM(n_components=300)),
        ("Nystroem m=1000", NystroemSVM(n_components=1000)),
    ]:
        t = time.perf_counter()
        est.fit(Xtr, ytr)
        dt = time.perf_counter() - t
        acc = float((est.predict(Xte) == yte).mean())
        print(f"  {name:<22} fit {dt:6.2f} s   test acc {acc:.3f}   best {est.fit_report()['best_params']}")


if __name__ == "__main__":
    main()
