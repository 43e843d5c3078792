"""How far the opt-in stain channels move between two labs, against the RGB-intensity features.

Usage: .venv/bin/python plugins/cytocompare-classical/benchmarks/stain_shift.py [--n 40] [--seed 0]
           [--compare] [--pbc-crop 250] [--pbc-scale F] [--figure PNG]

Cells: --n of each class present in both Matek bone marrow (../shared/data/matek-bm: EOS, LYT,
MON, NGS) and Acevedo peripheral blood (../shared/data/pbc: EO_*, LY_*, MO_*, SNE_*), seeded;
PBC centre-cropped to 250 x 250 as ``protocols/quick.yaml`` loads it (``--pbc-crop 0``: whole).
For each group of features (``intensity`` on red/green/blue; on the 12 default channels; on
``methylblue_od``/``eosin_od``; and the same for ``haralick`` at distance 1) it prints

* shift: the median over the group's features of ``|mean_pbc - mean_matek| / sd_matek``, over
  all cells (both sets hold the same classes in the same numbers) and per class (averaged);
* in range: the fraction of PBC values inside the Matek [min, max] of their feature;
* the intensity groups again, split into location statistics (mean, min, max, rms, percentiles)
  and spread/shape statistics (sd, skewness, kurtosis, range, iqr, mad, cv, entropy, energy);
* cv / transfer: accuracy of a standardised logistic regression (C = 0.1) on that group alone,
  5-fold within Matek and trained on Matek, tested on PBC (chance 0.25): does the group still
  tell the classes apart, and does that survive the change of lab.

``--compare`` also prints the figures behind the choice of the unmixing matrix (skimage's H&E
``hed_from_rgb`` vs the Giemsa ``bex_from_rgb``) and against per-cell stain-strength
normalisation (see ``cytocompare_classical/features/stain.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
CLASSES = {"EOS": "eosinophil/EO_", "LYT": "lymphocyte/LY_", "MON": "monocyte/MO_", "NGS": "neutrophil/SNE_"}
STAIN = ["methylblue_od", "eosin_od"]
RGB = ["red", "green", "blue"]


def pick(n: int, seed: int) -> list[tuple[str, str, Path]]:
    rng = np.random.default_rng(seed)
    out = []
    for cls, pbc in CLASSES.items():
        folder, prefix = pbc.split("/")
        for lab, files in (("matek", sorted((DATA / "matek-bm" / cls).glob("*.jpg"))),
                           ("pbc", sorted((DATA / "pbc" / folder).glob(prefix + "*.jpg")))):
            if not files:
                sys.exit(f"no images for {lab} {cls} under {DATA}")
            out += [(lab, cls, files[i]) for i in sorted(rng.choice(len(files), min(n, len(files)), replace=False))]
    return out


def features(cells: list[tuple[str, str, Path]], pbc_crop: int = 250, pbc_scale: float | None = None
             ) -> tuple[np.ndarray, list[str], list[dict]]:
    from cytocompare.images import read_image
    import cytocompare_classical.features as F
    from cytocompare_classical.segmentation import segment_cell

    chans = [*F.ALL_CHANNELS, *STAIN]
    off = {"channels": []}
    fs = F.feature_set("full", {"intensity": {"channels": chans}, "haralick": {"channels": chans, "distances": [1]},
                                "hist": off, "zernike": off, "tas": off, "gabor": off, "granulometry": off,
                                "lbp": {"configs": [[1, 8, ["grey"]]]}})
    rows, raw = [], []
    for lab, _, path in cells:
        # PBC as test_data.scale and center_crop give it to a run (protocols/quick.yaml: crop 250)
        crop = (pbc_crop, pbc_crop) if lab == "pbc" and pbc_crop else None
        rgb = read_image(path, crop=crop, scale=pbc_scale if lab == "pbc" else None)
        row, seg = F.compute_features(rgb, fs)
        rows.append(row)
        raw.append({"rgb": rgb, "seg": seg})
    return np.array(rows), fs.names(), raw


def report(name: str, X: np.ndarray, labs: np.ndarray, y: np.ndarray) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    A, B = X[labs == "matek"], X[labs == "pbc"]
    sd = A.std(0, ddof=1)
    keep = sd > 1e-9  # constant on Matek: no scale to measure a shift in
    shift = float(np.median(np.abs(B.mean(0) - A.mean(0))[keep] / sd[keep]))
    per_class = []
    for c in CLASSES:
        a, b = X[(labs == "matek") & (y == c)], X[(labs == "pbc") & (y == c)]
        s = a.std(0, ddof=1)
        k = s > 1e-9
        per_class.append(np.median(np.abs(b.mean(0) - a.mean(0))[k] / s[k]))
    in_range = float(((B >= A.min(0)) & (B <= A.max(0)))[:, keep].mean())
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    cv = cross_val_score(clf, A[:, keep], y[labs == "matek"], cv=5).mean()
    transfer = clf.fit(A[:, keep], y[labs == "matek"]).score(B[:, keep], y[labs == "pbc"])
    print(f"{name:34s} {int(keep.sum()):5d} {shift:6.2f} {np.mean(per_class):9.2f} {in_range:8.2f} "
          f"{cv:5.2f} {transfer:8.2f}")


def compare(raw: list[dict], labs: np.ndarray, y: np.ndarray) -> None:
    """The unmixing matrices and the per-cell normalisations that were tried (stain.py)."""
    from skimage import color

    from cytocompare_classical.features.intensity import _stats_from_hist
    from cytocompare_classical.features.stain import OD_MAX, _OD_SCALE, background_rgb

    def od(rgb: np.ndarray, I0: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        return color.separate_stains((rgb.astype(float) + 1) / (I0 + 1), matrix)[..., :2] * _OD_SCALE

    print("\nmatrix  lab    blue/H nuc:cyto d'  corr(blue,E) in cell  residual OD  EOS>NGS eosin AUC (cyto; cyto/nuc)")
    for mname, M in (("hed", color.hed_from_rgb), ("bex", color.bex_from_rgb)):
        for lab in ("matek", "pbc"):
            d, corr, resid, e_cyt, e_rel = [], [], [], {}, {}
            for r, c in zip((r for r, l in zip(raw, labs) if l == lab), y[labs == lab]):
                rgb, seg = r["rgb"], r["seg"]
                if not seg.ok:
                    continue
                I0 = background_rgb(rgb, seg.cell)
                s = od(rgb, I0, M)
                nuc, cyt, cell = seg.nucleus, seg.cytoplasm, seg.cell
                h, e = s[..., 0], s[..., 1]
                d.append((h[nuc].mean() - h[cyt].mean()) / np.sqrt(0.5 * (h[nuc].var() + h[cyt].var())))
                corr.append(np.corrcoef(h[cell], e[cell])[0, 1])
                o = -np.log((rgb[cell].astype(float) + 1) / (I0 + 1))
                recon = (o @ M)[:, :2] @ np.linalg.inv(M)[:2]
                resid.append(np.linalg.norm(o - recon) / np.linalg.norm(o))
                e_cyt.setdefault(c, []).append(np.median(e[cyt]))
                e_rel.setdefault(c, []).append(np.median(e[cyt]) / max(np.median(e[nuc]), 1e-3))

            def auc(v: dict) -> float:
                a, b = np.array(v["EOS"]), np.array(v["NGS"])
                return float((a[:, None] > b[None]).mean())

            print(f"{mname:7s} {lab:6s} {np.median(d):20.2f} {np.median(corr):21.2f} {np.median(resid):12.2f}"
                  f" {auc(e_cyt):13.2f}; {auc(e_rel):.2f}")

    def stats(ch: np.ndarray, seg: object, hi: float) -> np.ndarray:
        q = np.minimum((np.clip(ch / hi, 0, 1) * 256).astype(int), 255)
        return np.concatenate([_stats_from_hist(np.bincount(q[m], minlength=256)[None] / max(m.sum(), 1))[0]
                               for m in (seg.cell, seg.nucleus, seg.cytoplasm)])

    def variant(r: dict, how: str) -> np.ndarray:
        rgb, seg = r["rgb"], r["seg"]
        I0 = np.full(3, 255.0) if how == "I0 = 255" else background_rgb(rgb, seg.cell)
        s = od(rgb, I0, color.bex_from_rgb)
        ref, hi = 1.0, OD_MAX
        if how == "/ nucleus median (joint)":
            ref, hi = np.median(s[..., 0][seg.nucleus]), 2.5
        elif how == "/ nucleus median (per stain)":
            ref, hi = np.median(s[seg.nucleus], 0), 2.5
        elif how == "/ cell p99 (per stain)":
            ref, hi = np.percentile(s[seg.cell], 99, axis=0), 1.5
        elif how == "/ image p99 (per stain)":
            ref, hi = np.percentile(s[s.sum(-1) > 0.15], 99, axis=0), 1.5
        s = s / np.maximum(ref, 1e-6)
        return np.concatenate([stats(s[..., k], seg, hi) for k in range(2)])

    print("\nbex intensity features, normalisation          n shift per-class in-range    cv transfer")
    ok = np.array([r["seg"].ok for r in raw])
    for how in ("I0 = 255", "I0 = background (the channels)", "/ nucleus median (joint)",
                "/ nucleus median (per stain)", "/ cell p99 (per stain)", "/ image p99 (per stain)"):
        X = np.array([variant(r, how) for r, k in zip(raw, ok) if k])
        report(how, X, labs[ok], y[ok])


def figure(path: str, raw: list[dict], labs: np.ndarray, y: np.ndarray) -> None:
    """One cell per class (rows) and lab (column groups): RGB, methylblue_od, eosin_od (0-2 OD
    shown as black-white), at half size."""
    from skimage import io
    from skimage.transform import rescale

    from cytocompare_classical.features.stain import OD_MAX, background_rgb, stain_channels

    rows = []
    for c in CLASSES:
        row = []
        for lab in ("matek", "pbc"):
            r = next(r for r, l, k in zip(raw, labs, y) if l == lab and k == c and r["seg"].ok)
            ch = stain_channels(r["rgb"], STAIN, background_rgb(r["rgb"], r["seg"].cell))
            grey = [np.repeat(np.clip(ch[n] * OD_MAX / 2.0, 0, 1)[..., None], 3, -1) for n in STAIN]
            row += [r["rgb"] / 255.0, *grey]
        rows.append(np.concatenate([rescale(p, 0.5, channel_axis=-1, anti_aliasing=True) for p in row], 1))
    io.imsave(path, (np.concatenate(rows, 0) * 255).round().astype(np.uint8))
    print(f"wrote {path}")


def main() -> None:
    from cytocompare_classical.features import ALL_CHANNELS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=40, help="cells per class and lab")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", action="store_true", help="also the matrix and normalisation comparison")
    ap.add_argument("--pbc-crop", type=int, default=250,
                    help="centre crop of the PBC images (360 x 363) in px, as test_data.center_crop; 0: none")
    ap.add_argument("--pbc-scale", type=float, default=None, help="rescale PBC images first, as test_data.scale")
    ap.add_argument("--figure", help="write a PNG of one cell per class and lab with its stain channels")
    args = ap.parse_args()
    cells = pick(args.n, args.seed)
    t = time.perf_counter()
    X, names, raw = features(cells, args.pbc_crop, args.pbc_scale)
    labs = np.array([c[0] for c in cells])
    y = np.array([c[1] for c in cells])
    ok = X[:, names.index("qc.segmentation_ok")] > 0.5
    print(f"{len(cells)} cells ({int((~ok).sum())} failed segmentations left out), {time.perf_counter() - t:.0f} s")
    X, labs_ok, y_ok = X[ok], labs[ok], y[ok]
    print(f"{'features':34s} {'n':>5s} {'shift':>6s} {'per-class':>9s} {'in-range':>8s} {'cv':>5s} {'transfer':>8s}")

    def cols(family: str, channels: list[str]) -> np.ndarray:
        parts = [n.split(".") for n in names]  # <mask>.<channel>.<family>[_<param>].<feature>
        return np.array([i for i, p in enumerate(parts)
                         if len(p) == 4 and p[2].startswith(family) and p[1] in channels])

    for family in ("intensity", "haralick"):
        for label, chans in (("RGB", RGB), ("12 default channels", list(ALL_CHANNELS)), ("stain OD", STAIN)):
            report(f"{family} {label}", X[:, cols(family, chans)], labs_ok, y_ok)
    # location (where the values lie) vs spread and shape (how they are distributed)
    location = ("mean", "min", "max", "rms", *(f"p{p:02d}" for p in (1, 5, 10, 25, 50, 75, 90, 95, 99)))
    for what, keep in (("location", lambda f: f in location), ("spread/shape", lambda f: f not in location)):
        for label, chans in (("RGB", RGB), ("stain OD", STAIN)):
            idx = [i for i in cols("intensity", chans) if keep(names[i].split(".")[3])]
            report(f"intensity {label}: {what}", X[:, idx], labs_ok, y_ok)
    if args.compare:
        compare(raw, labs, y)
    if args.figure:
        figure(args.figure, raw, labs, y)


if __name__ == "__main__":
    main()
