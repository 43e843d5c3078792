"""Throughput of BatchAugment at 250x250, batch 256: geometric only, + HED, + Macenko.

Usage::

    python plugins/cytocompare-deep/benchmarks/bench_augment.py [--batch 256] [--size 250] [--repeats 3]
        [--device cpu|cuda|all] [--dtype float32|bfloat16]

Prints images/second per configuration and device (CUDA timings are synchronised). The
Macenko row estimates the stain matrix on every call; "Macenko, cached" passes a precomputed
matrix, as training code caching it per source image would.
"""

from __future__ import annotations

import argparse
import time

import torch

from cytocompare_deep.augment import BatchAugment
from cytocompare_deep.stain import macenko_stain_matrix, rgb_to_od


def _synthetic_batch(batch: int, size: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cell = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2).float()
    x = 1.0 - cell * torch.tensor([0.35, 0.55, 0.25])[:, None, None]
    x = x[None].expand(batch, -1, -1, -1) * (0.9 + 0.1 * torch.rand(batch, 3, size, size, generator=g))
    return x.clamp(0, 1).to(device=device, dtype=dtype)


def _time(fn, repeats: int, device: str) -> float:
    fn()  # warm-up (allocations, kernels)
    if device == "cuda":
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"{args.size}x{args.size}, {args.dtype}, best of {args.repeats}")
    for device in devices:
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        x = _synthetic_batch(args.batch, args.size, device, dtype)
        g = torch.Generator(device=device).manual_seed(0)
        cached = macenko_stain_matrix(rgb_to_od(x))
        configs = [
            ("geometric only", BatchAugment(stain=None), None),
            ("geometric + HED", BatchAugment(stain="hed"), None),
            ("geometric + Macenko", BatchAugment(stain="macenko"), None),
            ("geometric + Macenko, cached", BatchAugment(stain="macenko"), cached),
            ("geometric + Macenko+HED", BatchAugment(stain="macenko-hed"), None),
            ("geometric + Macenko+HED, cached", BatchAugment(stain="macenko-hed"), cached),
            ("Macenko estimation alone", None, None),
        ]
        for label, aug, matrix in configs:
            if aug is None:
                seconds = _time(lambda: macenko_stain_matrix(rgb_to_od(x)), args.repeats, device)
            else:
                seconds = _time(lambda a=aug, m=matrix: a(x, g, stain_matrix=m), args.repeats, device)
            print(f"{name:>24s}  {label:<28s} {args.batch / seconds:10.0f} img/s  ({seconds * 1e3:8.1f} ms/batch)")


if __name__ == "__main__":
    main()
