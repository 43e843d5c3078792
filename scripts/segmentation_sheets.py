"""Contact sheets of the classical arm's segmentation on real cells, for checking masks by eye.

Each tile shows one cell twice, the segmentation of a reference version (left, e.g. the one
before a change: ``--old-ref <git commit>``) and the current one (right): nucleus contour in
yellow, cell contour in green, image centre as a red dot, a red bar on top when segmentation
failed. Tiles are labelled with the file name; the cells are a seeded sample of ``--per-class``
files per class folder, or the files of an existing ``--cells`` CSV (so that the sheets of
checked cells can be regenerated exactly).

    python scripts/segmentation_sheets.py --old-ref ab2e20c \
        --cells docs/segmentation/checked_cells.csv -o docs/segmentation

Writes ``<dataset>_<k>.png`` (24 cells a sheet) and ``sheet_cells.csv`` (file, dataset, sheet,
row, col), the list to record judgements against (docs/segmentation.md).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
SEGMENTATION = "plugins/cytocompare-classical/cytocompare_classical/segmentation.py"
#: how each data set is loaded, as protocols/quick.yaml loads it (PBC: centre crop to 250 px)
CROP = {"matek-bm": None, "pbc": (250, 250)}
TILE = 170  # px per view (a cell is shown twice: old | new)
COLS, ROWS = 4, 6


def load_module(source: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it executes
    exec(compile(source, name, "exec"), module.__dict__)  # noqa: S102 - our own file from git
    return module


def segmentation_at(ref: str | None) -> ModuleType:
    """segmentation.py at a git commit (``git show``), or the working tree's for None."""
    path = ROOT / SEGMENTATION
    source = path.read_text() if ref is None else subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:{SEGMENTATION}"], check=True, capture_output=True, text=True).stdout
    return load_module(source, f"segmentation_{ref or 'worktree'}")


def sample_cells(root: Path, per_class: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    out: list[Path] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(folder.rglob("*.jpg"))
        out += [files[i] for i in sorted(rng.choice(len(files), size=min(per_class, len(files)), replace=False))]
    return out


def read(path: Path, crop: tuple[int, int] | None) -> np.ndarray:
    from cytocompare.images import read_image

    return read_image(path, crop=crop)


def view(rgb: np.ndarray, seg: object) -> Image.Image:
    """One view: the cell scaled to TILE px with 1-px contours drawn at that scale."""
    h, w = rgb.shape[:2]
    img = np.asarray(Image.fromarray(rgb).resize((TILE, TILE), Image.Resampling.BILINEAR)).copy()
    for mask, colour in ((seg.cell, (0, 230, 0)), (seg.nucleus, (255, 235, 0))):
        small = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((TILE, TILE), Image.Resampling.NEAREST)) > 0
        img[small & ~ndi.binary_erosion(small, border_value=0)] = colour
    c = TILE // 2
    img[c - 1 : c + 2, c - 1 : c + 2] = (255, 0, 0)
    if not seg.ok:
        img[:6] = (255, 0, 0)
    return Image.fromarray(img)


def write_sheets(cells: list[tuple[str, Path]], old: ModuleType | None, new: ModuleType, out: Path) -> list[list]:
    rows: list[list] = []
    per_sheet = COLS * ROWS
    by_set: dict[str, list[Path]] = {}
    for dataset, path in cells:
        by_set.setdefault(dataset, []).append(path)
    views = 2 if old is not None else 1
    label_h = 14
    for dataset, paths in by_set.items():
        for k in range(0, len(paths), per_sheet):
            chunk = paths[k : k + per_sheet]
            sheet = Image.new("RGB", (COLS * (views * TILE + 6), ROWS * (TILE + label_h + 4)), "white")
            draw = ImageDraw.Draw(sheet)
            for j, path in enumerate(chunk):
                r, c = divmod(j, COLS)
                x, y = c * (views * TILE + 6), r * (TILE + label_h + 4)
                rgb = read(path, CROP[dataset])
                tiles = ([view(rgb, old.segment_cell(rgb))] if old is not None else []) + [view(rgb, new.segment_cell(rgb))]
                for v, tile in enumerate(tiles):
                    sheet.paste(tile, (x + v * TILE, y + label_h))
                draw.text((x + 2, y + 1), f"{r},{c} {path.parent.name}/{path.name}", fill="black")
                rows.append([path.name, dataset, f"{dataset}_{k // per_sheet + 1}.png", r, c, f"{path.parent.name}"])
            name = out / f"{dataset}_{k // per_sheet + 1}.png"
            # a 64-colour palette keeps a sheet at a few hundred KB
            sheet.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(name, optimize=True)
            print(f"wrote {name} ({name.stat().st_size // 1024} KB)")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="folder holding matek-bm/ and pbc/")
    ap.add_argument("--per-class", type=int, default=15, help="cells sampled per class folder (matek-bm: 7, pbc: 8 folders)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cells", type=Path, help="CSV with file and dataset columns: show exactly these cells")
    ap.add_argument("--old-ref", help="git commit whose segmentation.py is shown on the left")
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "segmentation")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cells is not None:
        with open(args.cells, newline="") as f:
            wanted = [(r["dataset"], r["file"]) for r in csv.DictReader(f)]
        index = {(ds, p.name): p for ds in CROP for p in (args.data / ds).rglob("*.jpg")}
        missing = [w for w in wanted if w not in index]
        if missing:
            sys.exit(f"{args.cells}: {len(missing)} cell(s) not found under {args.data}, e.g. {missing[0]}")
        cells = [(ds, index[(ds, name)]) for ds, name in wanted]
    else:
        cells = [(ds, p) for ds in CROP for p in sample_cells(args.data / ds, args.per_class, args.seed)]
    old = segmentation_at(args.old_ref) if args.old_ref else None
    new = segmentation_at(None)
    rows = write_sheets(cells, old, new, args.out)
    with open(args.out / "sheet_cells.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "dataset", "sheet", "row", "col", "folder"])
        w.writerows(rows)


if __name__ == "__main__":
    main()
