"""Measure two data sets' pixel scales on their red cells (cytocompare/scale.py), as a run with
``test_data.scale: red_cells`` does, and draw the red cells found, for checking by eye.

    python scripts/measure_scale.py ../shared/data/matek-bm ../shared/data/pbc \
        --seed 42 --gallery docs/external/red_cells.png

Prints each set's median red-cell diameter (IQR, 95 % interval of the median, cells and images)
and the factor ``train / test`` with its range. The defaults are those of a run;
``--max-images 0 --target-cells 0``: every image of each set.
The gallery shows, per set, a seeded choice of images with every red cell counted drawn as a
blue circle.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from cytocompare.images import ImageSet
from cytocompare.scale import (
    MAX_IMAGES,
    TARGET_CELLS,
    factor_interval,
    measure_red_cells,
    red_cell_circles,
    scale_factor,
)

_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}


def image_set(folder: Path) -> ImageSet:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _SUFFIXES)
    if not paths:
        sys.exit(f"{folder}: no image files")
    return ImageSet(paths, [p.parent.name for p in paths])


def gallery(sets: dict[str, ImageSet], out: Path, per_set: int, seed: int, tile: int = 200) -> None:
    """``per_set`` images of each set in a row each (tiles of ``tile`` px), red cells circled."""
    from PIL import Image, ImageDraw

    rows = []
    for images in sets.values():
        rng = np.random.default_rng(seed)
        row = Image.new("RGB", (tile * per_set, tile), "white")
        # images with at least one red cell: the point is to check what was counted
        shown = 0
        for i in rng.permutation(len(images)):
            if shown == per_set:
                break
            rgb = images[int(i)]
            circles = red_cell_circles(rgb)
            if not circles:
                continue
            im = Image.fromarray(rgb)
            draw = ImageDraw.Draw(im)
            for c in circles:
                r = c.diameter / 2
                draw.ellipse([c.cx - r, c.cy - r, c.cx + r, c.cy + r], outline=(0, 0, 255), width=3)
            im.thumbnail((tile, tile))
            row.paste(im, (shown * tile, 0))
            shown += 1
        rows.append(row)
    sheet = Image.new("RGB", (tile * per_set, tile * len(rows)), "white")
    for k, row in enumerate(rows):
        sheet.paste(row, (0, k * tile))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(f"gallery: {out}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train", type=Path, help="the training set's folder")
    ap.add_argument("test", type=Path, help="the external test set's folder")
    ap.add_argument("--max-images", type=int, default=MAX_IMAGES, help="images looked at per set, at most; 0: all")
    ap.add_argument("--target-cells", type=int, default=TARGET_CELLS,
                    help="stop once this many red cells are measured; 0: look at every image allowed")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--gallery", type=Path, help="write a PNG of images with their red cells circled")
    ap.add_argument("--gallery-images", type=int, default=8, help="images per set in the gallery")
    args = ap.parse_args(argv)
    sets = {"training": image_set(args.train), "test": image_set(args.test)}
    sizes = {}
    for name, images in sets.items():
        t = time.perf_counter()
        n = args.max_images or len(images)
        sizes[name] = measure_red_cells(images, max_images=n, target_cells=args.target_cells or len(images) * 1000,
                                        seed=args.seed, what=f"{name} set")
        print(f"{name} set {args.train if name == 'training' else args.test}: {sizes[name].describe()} "
              f"[{time.perf_counter() - t:.1f} s]")
    lo, hi = factor_interval(sizes["training"], sizes["test"])
    print(f"factor (training / test): {scale_factor(sizes['training'], sizes['test'])} (95 % range {lo}-{hi})")
    if args.gallery:
        gallery(sets, args.gallery, args.gallery_images, args.seed)


if __name__ == "__main__":
    main()
