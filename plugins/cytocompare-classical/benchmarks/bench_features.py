"""Benchmark the handcrafted features: count, CPU seconds per cell, per-family breakdown.

Usage: .venv/bin/python plugins/cytocompare-classical/benchmarks/bench_features.py
           [--images DIR] [--n 100] [--pbc-n 50] [--baseline REV]

Images: --n cells drawn (mixed classes, seed 0) from --images DIR (class folders of JPEGs), else
../shared/data/matek-bm, else the bundled sample, else synthetic cells; plus --pbc-n cells of
../shared/data/pbc when it exists. Single process, BLAS on one thread; times are CPU seconds
(``time.process_time``) so that other load on the machine inflates them less than wall-clock.

``--save PATH`` stores this run's feature matrix (``PATH.npy``, names in ``PATH.json``) and
``--reference PATH`` compares this run's values with a stored one (the same cells and profile),
so a speed-up can be checked against the unchanged code without running it again.
``--cprofile FILE`` writes a cProfile of the timed loop (``python -m pstats FILE``). ``--warm``
computes every cell once untimed first, so that per-size caches (the Gabor kernel bank of each
padded crop size) are built before timing, as in a long run; without it the first cell of each
size pays for its bank.

``--baseline REV`` also runs the feature code of git revision REV (the classical plugin's package
taken from git into a temporary folder) on the same cells in this run, one after the other in
fresh processes, and prints both per-family columns side by side with the largest deviation of
any feature value between the two (the speed-ups must change no feature beyond rounding).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: BLAS threads would blur the per-core figure

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
PLUGIN = Path(__file__).resolve().parents[1]


def _pick(folder: Path, n: int, seed: int) -> list[Path]:
    files = sorted(folder.rglob("*.jpg")) + sorted(folder.rglob("*.png")) + sorted(folder.rglob("*.tif*"))
    if not files or n <= 0:
        return []
    rng = np.random.default_rng(seed)
    return [files[i] for i in sorted(rng.choice(len(files), size=min(n, len(files)), replace=False))]


def _image_files(folder: Path | None, n: int, pbc_n: int) -> tuple[str, list[Path]]:
    candidates = [folder] if folder else [REPO.parent / "shared" / "data" / "matek-bm",
                                          REPO / "cytocompare" / "sample_data" / "matek-bm-sample"]
    for c in candidates:
        if c is not None and c.is_dir() and (files := _pick(c, n, 0)):
            pbc = REPO.parent / "shared" / "data" / "pbc"
            extra = _pick(pbc, pbc_n, 1) if folder is None and pbc.is_dir() else []
            return f"{len(files)} from {c}" + (f" + {len(extra)} from {pbc}" if extra else ""), files + extra
    return "synthetic", []


def _measure(files: list[str], n_synthetic: int, profile: str, out: str, cprofile: str | None,
             warm: bool = False) -> None:
    """Worker: per-family CPU seconds and the feature matrix of the code on sys.path."""
    from threadpoolctl import threadpool_limits

    import cytocompare_classical.features as F

    decode = 0.0
    if files:
        from cytocompare.images import read_image

        read_image(files[0])  # warm-up (PIL's plugins)
        c0 = time.process_time()
        images = [read_image(f) for f in files]
        decode = time.process_time() - c0
    else:
        sys.path.insert(0, str(PLUGIN / "tests"))
        from test_segmentation import synthetic_cell

        images = [synthetic_cell(i)[0] for i in range(n_synthetic)]
    wall_clock = time.perf_counter  # kept: the next line makes the time module's perf_counter CPU time
    with threadpool_limits(1):
        for rgb in images if warm else images[:1]:
            F.compute_features(rgb, profile)  # warm-up (imports, kernel-bank cache)
        F.time.perf_counter = time.process_time  # type: ignore[attr-defined]  # the per-family clock: CPU too
        timings: dict[str, float] = {}
        rows, ok = [], 0
        prof = None
        if cprofile:
            import cProfile

            prof = cProfile.Profile(time.process_time)
            prof.enable()
        w0, c0 = wall_clock(), time.process_time()
        for rgb in images:
            row, seg = F.compute_features(rgb, profile, timings=timings)
            rows.append(row)
            ok += seg.ok
        wall, cpu = wall_clock() - w0, time.process_time() - c0
        if prof is not None:
            prof.disable()
            prof.dump_stats(cprofile)
    np.save(out + ".npy", np.stack(rows))
    Path(out + ".json").write_text(json.dumps({
        "n": len(images), "ok": ok, "cpu": cpu, "decode": decode, "wall": wall, "timings": timings,
        "names": F.feature_names(profile), "module": F.__file__,
    }))


def _run(pythonpath: list[str], files: list[Path], n: int, profile: str, out: Path,
         cprofile: str | None = None, warm: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*pythonpath, os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, __file__, "--worker", str(out), "--profile", profile, "--n", str(n),
            *(["--cprofile", cprofile] if cprofile else []), *(["--warm"] if warm else []), *map(str, files)]
    subprocess.run(args, env=env, check=True)
    res = json.loads(Path(str(out) + ".json").read_text())
    res["X"] = np.load(str(out) + ".npy")
    return res


def _baseline_package(rev: str, dest: Path) -> Path:
    """The classical plugin's package at git revision ``rev``, unpacked under ``dest``."""
    sub = PLUGIN.relative_to(REPO) / "cytocompare_classical"
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, str(sub)], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / PLUGIN.relative_to(REPO)


def _deviation(a: np.ndarray, b: np.ndarray) -> str:
    d = np.abs(a - b)
    big = np.abs(b) > 1e-6
    rel = (d[big] / np.abs(b[big])).max() if big.any() else 0.0
    close = np.isclose(a, b, rtol=1e-6, atol=1e-9)
    same_nan = np.array_equal(np.isnan(a), np.isnan(b))
    return (f"max |new - old| {np.nanmax(d):.2e}; max relative (|old| > 1e-6) {rel:.2e}; "
            f"{(a == b).mean():.1%} bit-identical; not within rtol 1e-6 / atol 1e-9: {int((~close).sum())}; "
            f"NaN positions identical: {same_nan}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=None)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--pbc-n", type=int, default=50)
    ap.add_argument("--profile", default="full")
    ap.add_argument("--baseline", default=None, help="git revision whose feature code is measured alongside")
    ap.add_argument("--save", default=None, help="store this run's feature matrix as SAVE.npy (+ SAVE.json)")
    ap.add_argument("--reference", default=None, help="compare the values with a matrix stored by --save")
    ap.add_argument("--cprofile", default=None, help="write a cProfile (CPU time) of the current code's loop here")
    ap.add_argument("--warm", action="store_true", help="compute every cell once untimed first (caches built)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return _measure(args.files, args.n, args.profile, args.worker, args.cprofile, args.warm)

    source, files = _image_files(args.images, args.n, args.pbc_n)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"now": _run([str(PLUGIN)], files, args.n, args.profile, Path(tmp) / "now", args.cprofile, args.warm)}
        if args.baseline:
            old = _baseline_package(args.baseline, Path(tmp))
            runs[args.baseline] = _run([str(old)], files, args.n, args.profile, Path(tmp) / "old", warm=args.warm)
    now = runs["now"]
    n = now["n"]
    print(f"images: {n}, {source}; profile {args.profile}" + ("; caches warmed first" if args.warm else ""))
    print(f"features per cell: {len(now['names'])}; segmentation ok: {now['ok']}/{n}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (CPU time is less disturbed by it than wall)")
    labels = list(runs)
    keys = sorted(set().union(*(r["timings"] for r in runs.values())), key=lambda k: -now["timings"].get(k, 0.0))
    print("CPU ms per cell, per step:" + "".join(f" {lab:>12s}" for lab in labels))
    for k in keys:
        print(f"  {k:14s}        " + "".join(f" {1000 * r['timings'].get(k, 0.0) / n:12.1f}" for r in runs.values()))
    print("  total (CPU s)       " + "".join(f" {r['cpu'] / n:12.3f}" for r in runs.values()))
    print("  decode (CPU ms)     " + "".join(f" {1000 * r['decode'] / n:12.1f}" for r in runs.values()))
    print("  total + decode (s)  " + "".join(f" {(r['cpu'] + r['decode']) / n:12.3f}" for r in runs.values()))
    print("  wall s per cell     " + "".join(f" {r['wall'] / n:12.3f}" for r in runs.values()))
    if args.save:
        np.save(args.save + ".npy", now["X"])
        Path(args.save + ".json").write_text(json.dumps({"names": now["names"], "files": list(map(str, files)),
                                                         "profile": args.profile}))
        print(f"feature matrix saved to {args.save}.npy")
    compare = []
    if args.baseline:
        compare.append((f"the baseline {args.baseline}", runs[args.baseline]))
    if args.reference:
        ref = json.loads(Path(args.reference + ".json").read_text())
        if ref["files"] != list(map(str, files)) or ref["profile"] != args.profile:
            sys.exit(f"{args.reference}: stored for other cells or another profile than this run's")
        stored = {"names": ref["names"], "X": np.load(args.reference + ".npy")}
        compare.append((f"the reference {args.reference}", stored))
    for what, old in compare:
        if old["names"] != now["names"]:
            print(f"feature names differ from {what}'s: values not compared")
            continue
        print(f"feature values vs {what}: " + _deviation(now["X"], old["X"]))
        names = np.array(now["names"])
        fam = np.array([(s.split(".")[2] if s.count(".") >= 3 else s.split(".")[1]).split("_")[0] for s in names])
        for f in dict.fromkeys(fam):
            cols = fam == f
            d = np.abs(now["X"][:, cols] - old["X"][:, cols])
            bad = ~np.isclose(now["X"][:, cols], old["X"][:, cols], rtol=1e-6, atol=1e-9)
            print(f"  {f:22s} max |new - old| {d.max():.2e}; outside rtol 1e-6 / atol 1e-9: {int(bad.sum())}")


if __name__ == "__main__":
    main()
