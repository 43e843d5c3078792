#!/usr/bin/env python3
"""Train and evaluate the deep models on a folder of class sub-folders (the GPU run's step 2).

    gpu_train.py subset --src /work/shared/data/matek-bm --dst .device/matek-bm --per-class 160
    gpu_train.py train  --data .device/matek-bm --model resnext50 --work .device/work [--samples-per-class 4000]
    gpu_train.py report --work .device/work --out $OUT

``train`` makes a seeded, stratified 80/20 holdout (identical for every model), fits one
classifier with per-epoch checkpoints under ``--work`` (a rerun on a warm machine resumes), and
writes ``<work>/<model>.json`` (metrics, history, timings) and ``<work>/<model>_pred.csv``.
``report`` merges them into ``metrics.json``, ``per_class.csv``, ``predictions.csv`` and
``charts.png`` in ``--out``. Needs numpy, torch, torchvision, PIL (matplotlib for the chart).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins" / "cytocompare-deep")]


def list_images(data: Path) -> tuple[list[str], list[str]]:
    paths, labels = [], []
    for d in sorted(p for p in data.iterdir() if p.is_dir()):
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff"):
                paths.append(str(f))
                labels.append(d.name)
    if not paths:
        raise SystemExit(f"no images in class folders under {data}")
    return paths, labels


def holdout(labels: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    test = []
    for c in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == c)
        rng.shuffle(rows)
        test.extend(rows[: max(1, int(round(test_size * len(rows))))].tolist())
    is_test = np.zeros(len(labels), bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    k = {c: i for i, c in enumerate(classes)}
    cm = np.zeros((len(classes), len(classes)), np.int64)
    for t, p in zip(y_true, y_pred):
        cm[k[t], k[p]] += 1
    tp = np.diag(cm).astype(float)
    support = cm.sum(1)
    prec = np.divide(tp, cm.sum(0), out=np.zeros_like(tp), where=cm.sum(0) > 0)
    rec = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)
    return {
        "accuracy": float(tp.sum() / cm.sum()),
        "balanced_accuracy": float(rec[support > 0].mean()),
        "macro_f1": float(f1[support > 0].mean()),
        "weighted_f1": float((f1 * support).sum() / support.sum()),
        "per_class": {c: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
        "confusion": cm.tolist(),
        "classes": classes,
    }


def cmd_subset(a) -> None:
    src, dst = Path(a.src), Path(a.dst)
    rng = np.random.RandomState(a.seed)
    total = 0
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in (".jpg", ".jpeg"))
        pick = sorted(rng.choice(len(files), min(a.per_class, len(files)), replace=False))
        (dst / d.name).mkdir(parents=True, exist_ok=True)
        for i in pick:
            shutil.copy2(files[i], dst / d.name / files[i].name)
            total += files[i].stat().st_size
    print(f"{dst}: {total / 2**20:.1f} MiB (the device tool carries at most 64 MiB with the working tree)")


def cmd_train(a) -> None:
    from cytocompare.images import ImageSet
    from cytocompare_deep.classifier import ResNeXt50Classifier, SequentialCNNClassifier

    paths, labels = list_images(Path(a.data))
    labels = np.asarray(labels)
    tr, te = holdout(labels, a.test_size, a.seed)
    images = ImageSet(paths, labels)
    cls = {"resnext50": ResNeXt50Classifier, "sequential-cnn": SequentialCNNClassifier}[a.model]
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    clf = cls(epochs=a.epochs, samples_per_class=a.samples_per_class, batch_size=a.batch_size,
              image_size=a.image_size, compile=a.compile, checkpoint_dir=str(work / f"ckpt-{a.model}"),
              random_state=a.seed, num_workers=a.num_workers, device=a.device)
    if a.model == "resnext50":
        clf.set_params(width=a.width)
    print(f"{a.model}: {len(tr)} train / {len(te)} test images, {len(set(labels))} classes; {clf!r}", flush=True)
    t0 = time.perf_counter()
    clf.fit(images.subset(tr), labels[tr])
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    proba = clf.predict_proba(images.subset(te))
    predict_s = time.perf_counter() - t0
    classes = [str(c) for c in clf.classes_]
    pred = np.asarray(classes)[proba.argmax(1)]
    m = metrics(labels[te], pred, classes)
    out = {"model": a.model, "params": {k: v for k, v in clf.get_params().items()
                                        if isinstance(v, (int, float, str, bool, type(None)))},
           "n_train": int(len(tr)), "n_test": int(len(te)), "n_parameters": int(clf.n_parameters_),
           "fit_s": fit_s, "predict_s": predict_s, "history": clf.history_,
           "mean_img_per_s": float(np.mean([h["img_per_s"] for h in clf.history_[1:] or clf.history_])),
           **m}
    (work / f"{a.model}.json").write_text(json.dumps(out, indent=2))
    with open(work / f"{a.model}_pred.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "path", "truth", "prediction", *[f"score_{c}" for c in classes]])
        for i, r in enumerate(te):
            w.writerow([a.model, paths[r], labels[r], pred[i], *[f"{p:.5f}" for p in proba[i]]])
    print(f"{a.model}: accuracy {m['accuracy']:.3f}  balanced {m['balanced_accuracy']:.3f}  "
          f"macro-F1 {m['macro_f1']:.3f}  weighted-F1 {m['weighted_f1']:.3f}  fit {fit_s:.0f} s", flush=True)


def cmd_report(a) -> None:
    work, out = Path(a.work), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {p.stem: json.loads(p.read_text()) for p in sorted(work.glob("*.json"))}
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    with open(out / "per_class.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "class", "precision", "recall", "f1", "support"])
        for name, r in results.items():
            for c, v in r["per_class"].items():
                w.writerow([name, c, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", v["support"]])
            for k in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1"):
                w.writerow([name, f"__{k}", "", "", f"{r[k]:.4f}", r["n_test"]])
    with open(out / "predictions.csv", "w") as fh:
        for i, p in enumerate(sorted(work.glob("*_pred.csv"))):
            lines = p.read_text().splitlines(keepends=True)
            fh.writelines(lines if i == 0 else lines[1:])  # same classes, same header
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no charts.png")
        return
    names = list(results)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(6 * (len(names) + 1), 5))
    axes = np.atleast_1d(axes)
    classes = results[names[0]]["classes"] if names else []
    xs = np.arange(len(classes))
    for j, n in enumerate(names):
        axes[0].bar(xs + j * 0.8 / len(names), [results[n]["per_class"][c]["recall"] for c in classes],
                    width=0.8 / len(names), label=f"{n} (macro-F1 {results[n]['macro_f1']:.2f})")
        cm = np.asarray(results[n]["confusion"], float)
        cm = cm / cm.sum(1, keepdims=True).clip(min=1)
        ax = axes[j + 1]
        ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
        ax.set_xticks(xs, classes, rotation=90)
        ax.set_yticks(xs, classes)
        ax.set_title(f"{n}: row-normalised confusion")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    axes[0].set_xticks(xs + 0.4 - 0.4 / max(1, len(names)), classes, rotation=90)
    axes[0].set_ylim(0, 1)
    axes[0].set_title("per-class recall (holdout)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "charts.png", dpi=110)
    print(f"wrote {out}/metrics.json, per_class.csv, predictions.csv, charts.png")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("subset")
    s.add_argument("--src", default="/work/shared/data/matek-bm")
    s.add_argument("--dst", default=".device/matek-bm")
    s.add_argument("--per-class", type=int, default=160)
    s.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("train")
    t.add_argument("--data", default=".device/matek-bm")
    t.add_argument("--model", choices=["resnext50", "sequential-cnn"], required=True)
    t.add_argument("--work", default=".device/work")
    t.add_argument("--epochs", type=int, default=13)
    t.add_argument("--samples-per-class", type=int, default=4000)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--image-size", type=int, default=250)
    t.add_argument("--test-size", type=float, default=0.2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--num-workers", type=int, default=8)
    t.add_argument("--compile", action="store_true")
    t.add_argument("--width", choices=["full", "tiny"], default="full", help="resnext50 only (tiny: CPU dry run)")
    t.add_argument("--device", default="auto")
    r = sub.add_parser("report")
    r.add_argument("--work", default=".device/work")
    r.add_argument("--out", required=True)
    a = ap.parse_args()
    {"subset": cmd_subset, "train": cmd_train, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
