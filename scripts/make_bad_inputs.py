#!/usr/bin/env python
"""Build a folder of bad inputs and bad protocols beside good real cells (issue 8).

    python scripts/make_bad_inputs.py OUT [--force]

OUT gets data folders, protocols and a README.txt that lists every case with the behaviour
expected of cytocompare (docs/reliability.md is the reference). The good cells are copied from
the bundled real sample (cytocompare/sample_data/matek-bm-sample). The output is deterministic:
the same files, bytes and listing on every call (only the one absolute path written into
data-manifest-paths/manifest.csv depends on where OUT is).

Run, for example:
    cytocompare validate OUT/protocols/skip.yaml
    cytocompare run OUT/protocols/skip.yaml --out /tmp/bad-skip
    cytocompare run OUT/protocols/stop.yaml --out /tmp/bad-stop
    for p in OUT/protocols/bad-*.yaml; do cytocompare validate "$p"; done
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE = Path(__file__).resolve().parents[1] / "cytocompare" / "sample_data" / "matek-bm-sample"
CLASSES = ("BLA", "EOS", "LYT", "MON", "NGS", "NIF", "PMO")
GOOD_PER_CLASS = 12  # >= 5 unique per class, so 5-fold CV works without the small-class policy
SIZE = (250, 250)


@dataclass(frozen=True)
class Case:
    number: int
    where: str
    what: str
    expected: str


CASES: list[Case] = []


def case(where: str, what: str, expected: str) -> None:
    CASES.append(Case(len(CASES) + 1, where, what, expected))


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def good_files(label: str) -> list[Path]:
    files = sorted((SAMPLE / label).glob("*.jpg"))
    if len(files) < GOOD_PER_CLASS + 4:
        sys.exit(f"{SAMPLE / label}: expected at least {GOOD_PER_CLASS + 4} sample images")
    return files


def rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def save_jpeg(im: Image.Image, path: Path, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="JPEG", quality=quality)


def copy_good(dest: Path, labels: tuple[str, ...] = CLASSES, n: int = GOOD_PER_CLASS) -> None:
    for label in labels:
        (dest / label).mkdir(parents=True, exist_ok=True)
        for f in good_files(label)[:n]:
            shutil.copyfile(f, dest / label / f.name)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------
# the main data folder: good cells of 7 classes plus bad files
# --------------------------------------------------------------------------------------------


def build_images(out: Path) -> None:
    images = out / "images"
    copy_good(images)
    bla = good_files("BLA")
    spare = bla[GOOD_PER_CLASS:]  # cells not otherwise in the data set
    cell = rgb(spare[0])

    p = images / "BLA" / "case_truncated.jpg"
    data = spare[1].read_bytes()
    p.write_bytes(data[: len(data) * 2 // 5])
    case("images/BLA/case_truncated.jpg", "JPEG cut after 40 % of its bytes",
         "skip: named in skipped.csv (cannot decode, truncated); stop: named in the error")

    (images / "BLA" / "case_zero_bytes.jpg").write_bytes(b"")
    case("images/BLA/case_zero_bytes.jpg", "zero-byte file", "skip: in skipped.csv (not a readable image); stop: named")

    save_jpeg(cell.convert("L"), images / "EOS" / "case_greyscale.jpg")
    case("images/EOS/case_greyscale.jpg", "greyscale (mode L) JPEG", "skipped.csv: image mode is 'L', expected 'RGB'")

    cell.convert("RGBA").save(images / "EOS" / "case_rgba.png")
    case("images/EOS/case_rgba.png", "RGBA PNG", "skipped.csv: image mode is 'RGBA'")

    grey16 = (np.asarray(cell.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(images / "LYT" / "case_16bit.png")
    case("images/LYT/case_16bit.png", "16-bit greyscale PNG", "skipped.csv: image mode is 'I;16' (or 'I')")

    save_jpeg(cell.resize((200, 200), Image.Resampling.BILINEAR), images / "LYT" / "case_wrong_size.jpg")
    case("images/LYT/case_wrong_size.jpg", "200x200 image, protocol expects image_size 250x250",
         "skipped.csv: size 200x200, expected 250x250")

    (images / "MON" / "case_not_an_image.jpg").write_bytes(b"this is a text file with a .jpg name\n" * 40)
    case("images/MON/case_not_an_image.jpg", "text content under a .jpg name", "skipped.csv: not a readable image file")

    write(images / "MON" / "case_notes.txt", "a note someone left in a class folder\n")
    case("images/MON/case_notes.txt", "text file (.txt) in a class folder",
         "ignored; TODAY only counted in a warning; issue 8.13: named in skipped.csv with cause 'ignored'")

    link = images / "NGS" / "case_broken_link.jpg"
    os.symlink("does-not-exist.jpg", link)
    case("images/NGS/case_broken_link.jpg", "symbolic link to a missing file",
         "skipped.csv: file not found; issue 8.13: named with cause 'ignored' or 'broken link'")

    shutil.copyfile(spare[2], images / "NGS" / ".case_hidden.jpg")
    case("images/NGS/.case_hidden.jpg", "hidden file (a real cell, name starts with '.')",
         "not read (hidden files are not data); issue 8.13: named in skipped.csv with cause 'ignored'")

    (images / "MYB").mkdir()
    case("images/MYB/", "empty class folder (a code of the scheme)", "warning naming the empty class; no row in tables")

    shutil.copyfile(bla[0], images / "BLA" / "case_byte_duplicate.jpg")
    case("images/BLA/case_byte_duplicate.jpg", f"byte-identical copy of BLA/{bla[0].name}",
         "warning about duplicates; both copies always on the same side of every split")

    save_jpeg(rgb(bla[1]), images / "BLA" / "case_near_duplicate_jpeg75.jpg", quality=75)
    case("images/BLA/case_near_duplicate_jpeg75.jpg", f"BLA/{bla[1].name} re-encoded as JPEG quality 75",
         "issue 8.17: one near-duplicate group with the original, kept on one side of every split, reported")

    w, h = SIZE
    resized = rgb(bla[2]).resize((w * 4 // 5, h * 4 // 5), Image.Resampling.BILINEAR).resize(
        (w, h), Image.Resampling.BILINEAR)
    save_jpeg(resized, images / "BLA" / "case_near_duplicate_resized.jpg", quality=95)
    case("images/BLA/case_near_duplicate_resized.jpg", f"BLA/{bla[2].name} resized 250->200->250",
         "issue 8.17: near-duplicate group with the original")

    save_jpeg(Image.new("RGB", SIZE, (255, 255, 255)), images / "NIF" / "case_blank_white.jpg")
    save_jpeg(Image.new("RGB", SIZE, (0, 0, 0)), images / "NIF" / "case_blank_black.jpg")
    case("images/NIF/case_blank_{white,black}.jpg", "blank white and blank black 250x250 RGB images",
         "valid files, but the classical extractor cannot segment a cell: issue 8.3: feature_failures.csv / "
         "skipped.csv with the cause, a count in the log and report; TODAY fill-value rows (qc.segmentation_ok = 0). "
         "The two also form one near-duplicate group (blank images hash alike)")

    cell.convert("CMYK").save(images / "PMO" / "case_cmyk.jpg", format="JPEG", quality=90)
    case("images/PMO/case_cmyk.jpg", "CMYK JPEG", "skipped.csv: image mode is 'CMYK'")

    cell.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(images / "PMO" / "case_palette.png")
    case("images/PMO/case_palette.png", "palette (mode P) PNG", "skipped.csv: image mode is 'P'")

    (images / "PMO" / "case_folder.jpg").mkdir()
    case("images/PMO/case_folder.jpg/", "an empty directory named like an image", "nothing read from it; no traceback")

    shutil.copyfile(spare[3], images / "EOS" / "case_upper_case_extension.JPG")
    case("images/EOS/case_upper_case_extension.JPG", "a good cell with an upper-case extension (labelled EOS)",
         "read as a normal image (extensions compare case-insensitively)")

    sub = images / "LYT" / "0001-1000"
    sub.mkdir()
    shutil.copyfile(good_files("LYT")[GOOD_PER_CLASS], sub / good_files("LYT")[GOOD_PER_CLASS].name)
    case("images/LYT/0001-1000/", "a good cell in a sub-folder (the paper's layout)", "read, labelled LYT")

    shutil.copyfile(spare[0], images / "case_stray_cell.jpg")
    case("images/case_stray_cell.jpg", "an image directly in the data folder, outside any class folder",
         "ignored with a warning naming it; issue 8.13: named in skipped.csv")

    (images / "_scratch").mkdir()
    shutil.copyfile(good_files("MON")[GOOD_PER_CLASS], images / "_scratch" / "cell.jpg")
    case("images/_scratch/", "a folder whose name starts with '_' (holding a cell)",
         "not a class folder; issue 8.13: its files named in skipped.csv with cause 'ignored'")

    fgc = images / "FGC"
    fgc.mkdir()
    for f in good_files("PMO")[GOOD_PER_CLASS:GOOD_PER_CLASS + 3]:
        shutil.copyfile(f, fgc / f.name)
    case("images/FGC/", "a class with 3 images (a scheme code; cells copied from PMO) under 5-fold CV with "
         "small_classes: drop", "issue 8.1: FGC dropped from cv5 only; the holdout's per-class rows include FGC "
         "and every average describes exactly the classes each split tested")


# --------------------------------------------------------------------------------------------
# other data folders (each one case that stops a run or needs its own protocol)
# --------------------------------------------------------------------------------------------


def build_other_data(out: Path) -> None:
    d = out / "data-label-outside-scheme"
    copy_good(d, ("BLA", "EOS", "PMO"), 6)
    (d / "BLAST").mkdir()
    for f in good_files("BLA")[GOOD_PER_CLASS:GOOD_PER_CLASS + 6]:
        shutil.copyfile(f, d / "BLAST" / f.name)
    case("data-label-outside-scheme/BLAST/", "class folder BLAST: not a code of matek2021",
         "issue 8.2: error at validate time naming BLAST, did you mean BLA?")

    d = out / "data-unmapped"
    for src, folder in (("BLA", "blast_cells"), ("EOS", "eos_cells"), ("PMO", "pmo_cells"), ("MON", "misc")):
        (d / folder).mkdir(parents=True)
        for f in good_files(src)[:6]:
            shutil.copyfile(f, d / folder / f.name)
    case("data-unmapped/misc/", "a class folder that the protocol's label_map does not map",
         "excluded and reported (skipped.csv, cause: label not in label_map), never dropped silently")

    d = out / "data-manifest-paths"
    copy_good(d, ("BLA", "EOS", "PMO"), 6)
    rows = [(f"{lab}/{p.name}", lab) for lab in ("BLA", "EOS", "PMO") for p in sorted((d / lab).iterdir())]
    # cells of images/ that are not also in this folder (else they would be byte duplicates here)
    absolute = (out / "images" / "EOS" / good_files("EOS")[8].name).resolve()
    rows.append((str(absolute), "EOS"))
    rows.append((f"../images/PMO/{good_files('PMO')[8].name}", "PMO"))
    with open(d / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    case("data-manifest-paths/manifest.csv", "a manifest entry with an absolute path and one with '..' that "
         "leaves the manifest's folder", "issue 8.12: refused by default (skipped.csv, or an error in stop mode); "
         "a protocol switch may allow it. TODAY both are read")

    d = out / "data-manifest-sha"
    copy_good(d, ("BLA", "EOS", "PMO"), 6)
    rows2 = []
    for lab in ("BLA", "EOS", "PMO"):
        for p in sorted((d / lab).iterdir()):
            rows2.append([f"{lab}/{p.name}", lab, sha256(p)])
    rows2[0][2] = hashlib.sha256(b"not this file").hexdigest()
    with open(d / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "label", "sha256"])
        writer.writerows(rows2)
    case(f"data-manifest-sha/manifest.csv ({rows2[0][0]})", "a manifest row whose sha256 does not match the file",
         "skip: in skipped.csv (sha256 mismatch); stop: named in the error")

    d = out / "data-conflicting-duplicate"
    copy_good(d, ("BLA", "EOS", "PMO"), 6)
    shutil.copyfile(d / "BLA" / good_files("BLA")[0].name, d / "EOS" / "case_same_bytes_as_a_BLA.jpg")
    case("data-conflicting-duplicate/EOS/case_same_bytes_as_a_BLA.jpg", "the same bytes labelled BLA and EOS",
         "error before any work, naming both files (labels conflict)")


# --------------------------------------------------------------------------------------------
# protocols
# --------------------------------------------------------------------------------------------

_BASE = """\
version: 1
name: {name}
description: {description}
seed: 42
class_scheme: matek2021
data:
  path: {data}
  image_size: [250, 250]
  on_bad_file: {mode}{data_extra}
splits:
  cv5: {{kind: kfold, n_splits: 5}}
  holdout70: {{kind: holdout, test_size: 0.3}}
small_classes: drop
methods:
  colour-logreg:
    classifier: {{name: colour-logreg}}
    splits: [cv5, holdout70]
{methods}reports: [table1, html]
n_jobs: 2
"""

_CLASSICAL = """\
  classical:
    optional: {optional}
    features: {{name: {features}, params: {{profile: {profile}}}}}
    selector: {{name: mrmr, params: {{k: 20, method: {mrmr_method}}}}}
    classifier: {{name: svm-rbf, params: {{class_weight: {class_weight}, C: {C}}}}}
    splits: [cv5, holdout70]
"""


def protocol(out: Path, name: str, description: str, *, data: str = "../images", mode: str = "skip",
             data_extra: str = "", extra: str = "", **classical: str) -> None:
    params = {"optional": "true", "features": "handcrafted", "profile": "quick", "mrmr_method": "MIQ",
              "class_weight": "balanced", "C": "1.0", **classical}
    methods = _CLASSICAL.format(**params)
    text = _BASE.format(name=name, description=description, data=data, mode=mode, data_extra=data_extra,
                        methods=methods)
    write(out / "protocols" / f"{name}.yaml", text + extra)


def build_protocols(out: Path) -> None:
    protocol(out, "skip", "every bad file beside good cells, on_bad_file skip")
    case("protocols/skip.yaml", "the images/ folder with on_bad_file: skip (and small_classes: drop)",
         "runs; every bad or ignored file named in skipped.csv with its cause; no traceback")
    protocol(out, "stop", "every bad file beside good cells, on_bad_file stop", mode="stop")
    case("protocols/stop.yaml", "the images/ folder with on_bad_file: stop",
         "stops before any work, naming the bad files (issue 8.8: all of them, or skipped.csv is written); "
         "issue 8.7: rerunning the same command afterwards works")

    protocol(out, "bad-optional-misspelt", "svm-rfb in an optional method")
    path = out / "protocols" / "bad-optional-misspelt.yaml"
    path.write_text(path.read_text().replace("name: svm-rbf", "name: svm-rfb"))
    case("protocols/bad-optional-misspelt.yaml", "optional method whose classifier is misspelt (svm-rfb)",
         "issue 8.4: validate error 'unknown classifier svm-rfb, did you mean svm-rbf', not 'plugin not installed'")

    protocol(out, "bad-profile", "handcrafted profile fulll", profile="fulll", optional="false")
    case("protocols/bad-profile.yaml", "profile: fulll", "issue 8.9: validate error naming the value and the choices")
    protocol(out, "bad-mrmr-method", "mRMR method MIX", mrmr_method="MIX", optional="false")
    case("protocols/bad-mrmr-method.yaml", "mrmr method: MIX", "issue 8.9: validate error (MID or MIQ)")
    protocol(out, "bad-class-weight", "class_weight balancd", class_weight="balancd", optional="false")
    case("protocols/bad-class-weight.yaml", "svm-rbf class_weight: balancd", "issue 8.9: validate error")
    protocol(out, "bad-C", "C abc", C="abc", optional="false")
    case("protocols/bad-C.yaml", "svm-rbf C: abc", "issue 8.9: validate error (C must be a positive number)")
    protocol(out, "bad-unknown-key", "an unknown top-level key", extra="n_job: 4\n")
    case("protocols/bad-unknown-key.yaml", "unknown key n_job", "validate error naming the unknown key (holds today)")
    protocol(out, "bad-label-map", "label_map to a code outside the scheme",
             data_extra="\n  label_map: {BLA: BLAST, EOS: EOS, LYT: LYT, MON: MON, NGS: NGS, NIF: NIF, PMO: PMO, "
                        "FGC: FGC}")
    case("protocols/bad-label-map.yaml", "label_map {BLA: BLAST}", "issue 8.2: validate error naming BLAST")
    protocol(out, "bad-label-outside-scheme", "a class folder BLAST", data="../data-label-outside-scheme")
    case("protocols/bad-label-outside-scheme.yaml", "data with a BLAST folder", "issue 8.2: validate error")
    protocol(out, "unmapped-class", "a folder not in label_map", data="../data-unmapped",
             data_extra="\n  label_map: {blast_cells: BLA, eos_cells: EOS, pmo_cells: PMO}")
    case("protocols/unmapped-class.yaml", "label_map that leaves the folder misc unmapped",
         "runs; misc's images excluded and named")
    protocol(out, "manifest-paths", "manifest with an absolute and a '..' path", data="../data-manifest-paths")
    case("protocols/manifest-paths.yaml", "the manifest with absolute and '..' paths", "issue 8.12 (see above)")
    protocol(out, "manifest-sha", "manifest with a wrong sha256", data="../data-manifest-sha")
    case("protocols/manifest-sha.yaml", "the manifest with a wrong sha256", "the file named in skipped.csv")
    protocol(out, "conflicting-duplicate", "same bytes, two labels", data="../data-conflicting-duplicate")
    case("protocols/conflicting-duplicate.yaml", "the conflicting byte duplicate", "error naming both files")
    write(out / "protocols" / "bad-yaml.yaml", "version: 1\nname: broken\nmethods: [unclosed\n")
    case("protocols/bad-yaml.yaml", "a protocol that is not valid YAML", "one-line error naming the file and line")


# --------------------------------------------------------------------------------------------


def write_readme(out: Path) -> None:
    lines = [
        "Bad inputs for cytocompare (issue 8), made by scripts/make_bad_inputs.py; deterministic.",
        f"Good cells: {GOOD_PER_CLASS} real cells of each of {', '.join(CLASSES)} from the bundled sample",
        "(cytocompare/sample_data/matek-bm-sample, Matek et al. 2021, CC BY 4.0), plus the cases below.",
        "'issue 8.N' marks behaviour that issue 8 item N still has to bring; the rest holds today.",
        "",
        "Try:",
        "  cytocompare validate protocols/skip.yaml",
        "  cytocompare run protocols/skip.yaml --out /tmp/bad-skip",
        "  cytocompare run protocols/stop.yaml --out /tmp/bad-stop",
        "  for p in protocols/bad-*.yaml; do cytocompare validate \"$p\"; done",
        "",
        f"{len(CASES)} cases:",
        "",
    ]
    for c in CASES:
        lines.append(f"{c.number:2d}. {c.where}")
        lines.append(f"    what:     {c.what}")
        lines.append(f"    expected: {c.expected}")
    write(out / "README.txt", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder (must not exist or be empty, unless --force)")
    parser.add_argument("--force", action="store_true", help="delete OUT first if it exists")
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        if not args.force:
            print(f"{out} is not empty; give --force to replace it", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    CASES.clear()
    build_images(out)
    build_other_data(out)
    build_protocols(out)
    write_readme(out)
    print(f"{out}: {len(CASES)} cases; see {out / 'README.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
