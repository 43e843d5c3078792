"""Paper-size benchmark: the data side on 171,374 files and the classical arm on 171,374 x 6,120.

Prints figures (wall time, process CPU time, peak RSS); asserts nothing. It lives in the
top-level ``benchmarks/`` and not beside a plugin's benchmarks because it times the core
(``datasets.load_dataset``, ``splits.make_plan``, ``metrics``) together with the classical plugin
(mRMR, SVM) and the deep plugin's streaming loader.

Steps (each classical step runs in a fresh subprocess, so its peak RSS is its own)::

    python benchmarks/bench_scale.py tree     --root /work/bench-tree      # generate 171,374 JPEGs
    python benchmarks/bench_scale.py data     --root /work/bench-tree      # list + check + plan
    python benchmarks/bench_scale.py matrix   --matrix /work/bench-X.f32   # 171,374 x 6,120 memmap
    python benchmarks/bench_scale.py classical --matrix /work/bench-X.f32 --rows 10000 40000 171374
    python benchmarks/bench_scale.py stream   --data ../shared/data/matek-bm   # CNN streaming, CPU side
    python benchmarks/bench_scale.py table    --results benchmarks/results.jsonl  # Markdown table

Every step appends one JSON line per measurement to ``--results`` (default
``bench_scale_results.jsonl`` in the working directory); ``table`` prints the Markdown table of
docs/scaling.md from them.

The class counts are the scheme's (``cytocompare/schemes/matek2021.yaml``, ``n_paper``).
Generated JPEGs are tiny (16 x 16 random noise, ~0.7 kB): the data-side figures time the
listing, hashing, decoding and planning of 171,374 files, not the decoding of 250 x 250 JPEGs
(``data --root ../shared/data/matek-bm --image-size 250`` times the same check on 2,800 real
files, for the per-file cost of real images).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
N_FEATURES = 6120
GENERATED_SIZE = 16  # side of the generated JPEGs (data.image_size of the generated tree)


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class Timer:
    """Wall and process CPU seconds of a block (CPU time is less disturbed by a shared machine)."""

    def __enter__(self) -> Timer:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def record(results: Path, **row: object) -> None:
    row = {"machine": machine(), **row}
    print(json.dumps(row), flush=True)
    with open(results, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {os.cpu_count()} cores, {mem:.0f} GiB, {platform.machine()}, Python {platform.python_version()}"


# --------------------------------------------------------------------------------------------
# the paper's class counts (one home: the scheme)
# --------------------------------------------------------------------------------------------


def paper_counts() -> dict[str, int]:
    from cytocompare.classes import matek2021

    return {c.code: int(c.n_paper) for c in matek2021().classes if c.n_paper}


def paper_labels(seed: int = 0) -> np.ndarray:
    """The 171,374 class labels in a seeded random order (so the first n rows are a random sample)."""
    counts = paper_counts()
    labels = np.repeat(np.array(list(counts)), list(counts.values()))
    return labels[np.random.default_rng(seed).permutation(labels.size)]


# --------------------------------------------------------------------------------------------
# data side
# --------------------------------------------------------------------------------------------


def paper_subfolder(i: int) -> str:
    """The paper layout's sub-folder of the i-th (1-based) image of a class: 0001-1000, 1001-2000, ..."""
    lo = (i - 1) // 1000 * 1000 + 1
    return f"{lo:04d}-{lo + 999:04d}"


def make_tree(root: Path, seed: int = 0) -> int:
    """CLASS/0001-1000/CLASS_00001.jpg for the paper's counts; distinct random-noise JPEGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    n = 0
    for code, count in paper_counts().items():
        for i in range(1, count + 1):
            folder = root / code / paper_subfolder(i)
            if i % 1000 == 1:
                folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (GENERATED_SIZE, GENERATED_SIZE, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
            (folder / f"{code}_{i:05d}.jpg").write_bytes(buf.getvalue())
            n += 1
    return n


def bench_data(root: Path, results: Path, image_size: int | None, n_jobs: int, near: bool,
               dump: Path | None = None) -> None:
    """Listing + check (sha256, decode, size, perceptual hash) + 5-fold and 70/30 plans.

    ``dump``: a folder to write what was computed (paths, labels, sha256, skipped files,
    perceptual hashes, the plan's table and hash), so that two versions of the code can be
    compared byte for byte (``cmp -r``)."""
    load0 = os.getloadavg()[0]
    from cytocompare.datasets import load_dataset
    from cytocompare.near_duplicates import DEFAULT_THRESHOLD
    from cytocompare.splits import make_plan

    size = None if image_size is None else (image_size, image_size)
    with Timer() as t_list:
        listed = load_dataset(root, verify=False)
    with Timer() as t_check:
        data = load_dataset(root, image_size=size, n_jobs=n_jobs, perceptual_hashes=near)
    splits = {"cv5": {"kind": "kfold", "n_splits": 5}, "holdout70": {"kind": "holdout", "test_size": 0.3}}
    with Timer() as t_plan:
        plan = make_plan(data.images.labels, data.images.sha256, splits, seed=42, small_classes="error",
                         paths=data.images.paths,
                         near_duplicate_hashes=data.perceptual_hashes if near else None,
                         near_duplicate_threshold=DEFAULT_THRESHOLD if near else None, n_jobs=n_jobs)
    n = len(data.images)
    if dump is not None:
        _dump(dump, data, plan)
    record(results, bench="data", load_avg_start=round(load0, 1), load_avg_end=round(os.getloadavg()[0], 1), root=str(root), n_files=n, n_listed=len(listed.images),
           layout=data.layout, classes=len(data.class_counts), skipped=len(data.skipped),
           near_duplicates=near, list_s=round(t_list.wall, 1), check_s=round(t_check.wall, 1),
           check_cpu_s=round(t_check.cpu, 1), phash_cpu_s=round(data.perceptual_hash_seconds, 1),
           plan_s=round(t_plan.wall, 1), plan_cpu_s=round(t_plan.cpu, 1),
           total_s=round(t_list.wall + t_check.wall + t_plan.wall, 1),
           check_ms_per_file=round(1000 * t_check.wall / n, 3),
           folds=len(plan.folds("cv5")) + len(plan.folds("holdout70")), peak_rss_gb=round(peak_rss_gb(), 2))


def _dump(folder: Path, data, plan) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    images = data.images
    (folder / "images.tsv").write_text("".join(f"{p}\t{y}\t{h}\n" for p, y, h in
                                               zip(images.paths, images.labels, images.sha256)))
    (folder / "skipped.tsv").write_text("".join(f"{s.path}\t{s.cause}\n" for s in data.skipped))
    (folder / "warnings.txt").write_text("\n".join(data.warnings) + "\n")
    if data.perceptual_hashes is not None:
        (folder / "perceptual_hashes.u64").write_bytes(data.perceptual_hashes.tobytes())
    header, rows = plan.csv_table(images.paths, images.labels)
    (folder / "plan.tsv").write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    (folder / "plan.json").write_text(plan.to_json_text())
    (folder / "plan_hash.txt").write_text(plan.hash + "\n")
    _, near_rows = plan.near_duplicate_table()
    (folder / "near_duplicates.tsv").write_text("".join("\t".join(map(str, r)) + "\n" for r in near_rows))


# --------------------------------------------------------------------------------------------
# classical arm
# --------------------------------------------------------------------------------------------


def make_matrix(path: Path, seed: int = 0, block: int = 8192) -> None:
    """171,374 x 6,120 float32 memmap with class structure, written in row blocks.

    Columns 0-299 carry a class mean (plus noise), 300-599 are noisy copies of them (redundant,
    what mRMR must avoid), the rest is noise; every column has its own scale and offset (the
    SVM standardises). Labels go to ``<path>.labels.npy``.
    """
    labels = paper_labels(seed)
    codes, y = np.unique(labels, return_inverse=True)
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 0.6, (codes.size, 300)).astype(np.float32)
    scale = np.exp(rng.normal(0, 1, N_FEATURES)).astype(np.float32)
    offset = rng.normal(0, 5, N_FEATURES).astype(np.float32)
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(labels.size, N_FEATURES))
    for s in range(0, labels.size, block):
        b = rng.standard_normal((min(block, labels.size - s), N_FEATURES), dtype=np.float32)
        b[:, :300] += means[y[s:s + len(b)]]
        b[:, 300:600] = b[:, :300] + 0.7 * rng.standard_normal((len(b), 300), dtype=np.float32)
        X[s:s + len(b)] = b * scale + offset
    X.flush()
    np.save(f"{path}.labels.npy", labels)


def _rows_plan(n_rows: int, labels_all: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels of the first n rows, training rows, test rows) of the 70/30 split (splits.make_plan)."""
    from cytocompare.splits import make_plan

    labels = labels_all[:n_rows]
    sha = np.array([f"{i:012x}" for i in range(n_rows)])
    plan = make_plan(labels, sha, {"holdout70": {"kind": "holdout", "test_size": 0.3}}, seed=42,
                     small_classes="train_only")
    fold = plan.folds("holdout70")[0]
    return labels, np.sort(fold.train), np.sort(fold.test)


def _gather(X: np.ndarray, rows: np.ndarray, cols: np.ndarray | None = None, block: int = 4096) -> np.ndarray:
    """float32 X[rows][:, cols] read from the memmap block by block (never all columns of all rows)."""
    out = np.empty((rows.size, X.shape[1] if cols is None else cols.size), dtype=np.float32)
    for s in range(0, rows.size, block):
        b = X[rows[s:s + block]]
        out[s:s + block] = b if cols is None else b[:, cols]
    return out


def step(name: str, matrix: Path, n_rows: int, work: Path) -> dict:
    """One step of the classical arm at ``n_rows`` (run in its own process)."""
    X = np.load(matrix, mmap_mode="r")
    labels, train, test = _rows_plan(n_rows, np.load(f"{matrix}.labels.npy"))
    sel_path = work / f"selected_{n_rows}.npy"
    pred_path = work / f"pred_{n_rows}.npy"
    info: dict = {"n_train": int(train.size), "n_test": int(test.size)}
    if name == "mrmr":
        from cytocompare_classical.mrmr import MRMRSelector

        with Timer() as t_read:
            Xtr = _gather(X, train)
        with Timer() as t:
            sel = MRMRSelector(k=500, method="MIQ").fit(Xtr, labels[train])
        np.save(sel_path, sel.selected_)
        info.update(read_s=round(t_read.wall, 1), informative_picked=int((sel.selected_ < 600).sum()))
    elif name == "svm":
        from cytocompare_classical.svm import NystroemSVM

        cols = np.load(sel_path)
        with Timer() as t_read:
            Xtr, Xte = _gather(X, train, cols), _gather(X, test, cols)
        with Timer() as t:
            svm = NystroemSVM(class_weight="balanced").fit(Xtr, labels[train])
            t_fit = time.perf_counter() - t.wall0
            pred = svm.predict(Xte)
        np.save(pred_path, pred)
        info.update(read_s=round(t_read.wall, 1), fit_s=round(t_fit, 1), n_iter=svm.n_iter_)
    elif name == "table1":
        from cytocompare.classes import matek2021
        from cytocompare.metrics import per_class_precision_recall, summary_metrics
        from cytocompare.tolerance import ToleranceMap

        pred = np.load(pred_path, allow_pickle=True)
        truth = labels[test]
        codes = matek2021().codes
        tol = ToleranceMap.from_scheme()
        with Timer() as t:
            for tolerance in (None, tol):
                per_class_precision_recall(truth, pred, codes, tolerance=tolerance)
            strict, tolerant = summary_metrics(truth, pred, codes), summary_metrics(truth, pred, codes, tol)
        info.update(balanced_accuracy_strict=round(strict["balanced_accuracy"], 3),
                    balanced_accuracy_tolerant=round(tolerant["balanced_accuracy"], 3))
    else:
        raise SystemExit(f"unknown step {name!r}")
    return {"step": name, "rows": n_rows, "wall_s": round(t.wall, 1), "cpu_s": round(t.cpu, 1),
            "peak_rss_gb": round(peak_rss_gb(), 2), **info}


def bench_classical(matrix: Path, rows: list[int], results: Path, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    for n in rows:
        for name in ("mrmr", "svm", "table1"):
            cmd = [sys.executable, str(HERE), "_step", name, "--matrix", str(matrix), "--rows", str(n),
                   "--work", str(work)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            record(results, bench="classical", **row)


# --------------------------------------------------------------------------------------------
# CNN side: the streaming path's CPU work (decode + augment)
# --------------------------------------------------------------------------------------------


def bench_stream(data: Path, results: Path, n_images: int, batch: int, size: int) -> None:
    """img/s of the CPU streaming source (PIL decode + resize in DataLoader workers) and of the
    paper's augmentation on the CPU, on real 250 x 250 JPEGs."""
    import torch

    from cytocompare.datasets import load_dataset
    from cytocompare_deep.augment import BatchAugment
    from cytocompare_deep.loading import StreamedImages

    images = load_dataset(data, verify=False).images
    order = np.resize(np.arange(len(images)), n_images)
    for workers in (0, 2):
        source = StreamedImages(images, size, torch.device("cpu"), num_workers=workers)
        with Timer() as t:
            n = sum(len(b) for b in source.batches(order, batch))
        record(results, bench="stream", what=f"decode+resize, {workers} worker(s)", images=n,
               img_per_s=round(n / t.wall, 1), cpu_s_per_img=round(t.cpu / n, 5), size=size,
               torch_threads=torch.get_num_threads())
    x = next(iter(StreamedImages(images, size, torch.device("cpu")).batches(order[:batch], batch)))
    for stain in ("none", "hed", "macenko-hed"):
        aug = BatchAugment(stain=None if stain == "none" else stain)
        xf = x.float() / 255
        aug(xf)  # warm-up
        with Timer() as t:
            for _ in range(2):
                aug(xf)
        record(results, bench="stream", what=f"augment ({stain}), batch {batch}", images=2 * batch,
               img_per_s=round(2 * batch / t.wall, 1), size=size, torch_threads=torch.get_num_threads())


# --------------------------------------------------------------------------------------------
# table
# --------------------------------------------------------------------------------------------


def table(results: Path) -> str:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    lines = []
    data = [r for r in rows if r.get("bench") == "data"]
    if data:
        lines += ["| data side (load average during the run) | files | list s | check s (CPU s) | "
                  "plan 5-fold + 70/30 s (CPU s) | total s | peak RSS GB |",
                  "|---|---|---|---|---|---|---|"]
        for r in data:
            load = f", load {r['load_avg_start']} → {r['load_avg_end']}" if "load_avg_start" in r else ""
            lines.append(f"| {r['root']}{' (+ near-duplicate hashes)' if r['near_duplicates'] else ''}{load} | "
                         f"{r['n_files']:,} | {r['list_s']} | {r['check_s']} ({r['check_cpu_s']}) | "
                         f"{r['plan_s']} ({r['plan_cpu_s']}) | {r['total_s']} | {r['peak_rss_gb']} |")
        lines.append("")
    cl = {(r["rows"], r["step"]): r for r in rows if r.get("bench") == "classical"}
    if cl:
        lines += ["| rows | train / test | mRMR K=500 s (CPU s) | mRMR peak RSS GB | SVM fit + predict s (CPU s) | "
                  "SVM peak RSS GB | Table 1 s | bal. acc. strict / tolerant |",
                  "|---|---|---|---|---|---|---|---|"]
        for n in sorted({k[0] for k in cl}):
            m, s, t = cl.get((n, "mrmr"), {}), cl.get((n, "svm"), {}), cl.get((n, "table1"), {})
            lines.append(
                f"| {n:,} | {m.get('n_train', 0):,} / {m.get('n_test', 0):,} | {m.get('wall_s', '-')} ({m.get('cpu_s', '-')}) | "
                f"{m.get('peak_rss_gb', '-')} | {s.get('wall_s', '-')} ({s.get('cpu_s', '-')}) | {s.get('peak_rss_gb', '-')} | "
                f"{t.get('wall_s', '-')} | {t.get('balanced_accuracy_strict', '-')} / {t.get('balanced_accuracy_tolerant', '-')} |")
        lines.append("")
    st = [r for r in rows if r.get("bench") == "stream"]
    if st:
        lines += ["| streaming path, CPU side | img/s |", "|---|---|"]
        lines += [f"| {r['what']} ({r['size']} px) | {r['img_per_s']} |" for r in st]
    machines = sorted({r["machine"] for r in rows})
    return "\n".join(lines + ["", "Machine: " + "; ".join(machines)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["tree", "data", "matrix", "classical", "stream", "table", "_step"])
    ap.add_argument("step", nargs="?", help="(_step only) mrmr, svm or table1")
    ap.add_argument("--root", type=Path, default=Path("/work/bench-tree"))
    ap.add_argument("--matrix", type=Path, default=Path("/work/bench-X.npy"))
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 40_000, 171_374])
    ap.add_argument("--work", type=Path, default=Path("/work/bench-work"))
    ap.add_argument("--results", type=Path, default=Path("bench_scale_results.jsonl"))
    ap.add_argument("--image-size", type=int, default=GENERATED_SIZE,
                    help="data.image_size checked by `data` (0: no size check)")
    ap.add_argument("--no-near-duplicates", action="store_true", help="`data`: skip the perceptual hashes")
    ap.add_argument("--n-jobs", type=int, default=-1)
    ap.add_argument("--dump", type=Path, default=None,
                    help="`data`: write the computed paths, hashes, skipped files and plan to this folder")
    ap.add_argument("--data", type=Path, default=Path("../shared/data/matek-bm"), help="`stream`: real images")
    ap.add_argument("--images", type=int, default=1024, help="`stream`: images decoded per setting")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=250)
    args = ap.parse_args()
    if args.what == "tree":
        with Timer() as t:
            n = make_tree(args.root)
        print(f"{n:,} files under {args.root} in {t.wall:.0f} s")
    elif args.what == "data":
        bench_data(args.root, args.results, args.image_size or None, args.n_jobs, not args.no_near_duplicates,
                   args.dump)
    elif args.what == "matrix":
        with Timer() as t:
            make_matrix(args.matrix)
        print(f"{args.matrix}: {os.path.getsize(args.matrix) / 1e9:.1f} GB in {t.wall:.0f} s")
    elif args.what == "classical":
        bench_classical(args.matrix, args.rows, args.results, args.work)
    elif args.what == "_step":
        print(json.dumps(step(args.step, args.matrix, args.rows[0], args.work)))
    elif args.what == "stream":
        bench_stream(args.data, args.results, args.images, args.batch, args.size)
    else:
        print(table(args.results))


if __name__ == "__main__":
    main()
