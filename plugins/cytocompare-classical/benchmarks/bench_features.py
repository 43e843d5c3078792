"""Benchmark the handcrafted features: count, CPU seconds per cell, per-family breakdown.

Usage: .venv/bin/python plugins/cytocompare-classical/benchmarks/bench_features.py [--images DIR] [--n 50]

Images: --images DIR (class folders of JPEGs), else ../shared/data/matek-bm, else the bundled
sample, else synthetic cells. Single process; times are CPU seconds (``time.process_time``) so
that other load on the machine inflates them less than wall-clock would; both are printed.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: BLAS threads would blur the per-core figure

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


def _images(folder: Path | None, n: int) -> tuple[str, list[np.ndarray]]:
    from cytocompare.images import read_image

    candidates = [folder] if folder else [REPO.parent / "shared" / "data" / "matek-bm", REPO / "cytocompare" / "sample_data" / "matek-bm-sample"]
    for c in candidates:
        if c is not None and c.is_dir():
            files = sorted(c.rglob("*.jpg")) + sorted(c.rglob("*.png")) + sorted(c.rglob("*.tif*"))
            if files:
                rng = np.random.default_rng(0)
                pick = rng.choice(len(files), size=min(n, len(files)), replace=False)
                return str(c), [read_image(files[i]) for i in sorted(pick)]
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_segmentation import synthetic_cell

    return "synthetic", [synthetic_cell(i)[0] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=None)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--profile", default="full")
    args = ap.parse_args()

    import cytocompare_classical.features as F

    source, images = _images(args.images, args.n)
    F.compute_features(images[0], args.profile)  # warm-up (imports, kernel-bank cache)
    timings: dict[str, float] = {}
    # the per-family clock inside compute_features: CPU time too
    F.time.perf_counter = time.process_time  # type: ignore[attr-defined]
    ok = 0
    w0, c0 = time.perf_counter(), time.process_time()
    for rgb in images:
        row, seg = F.compute_features(rgb, args.profile, timings=timings)
        ok += seg.ok
        assert np.isfinite(row).all()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    n = len(images)
    print(f"images: {n} from {source}; profile {args.profile}")
    print(f"features per cell: {len(F.feature_names(args.profile))}")
    print(f"segmentation ok: {ok}/{n}")
    print(f"CPU seconds per cell (1 core): {cpu / n:.3f}   (wall {wall / n:.3f}; load {os.getloadavg()[0]:.1f})")
    print("per-step CPU ms per cell:")
    for k, v in sorted(timings.items(), key=lambda kv: -kv[1]):
        print(f"  {k:14s} {1000 * v / n:7.1f}")


if __name__ == "__main__":
    main()
