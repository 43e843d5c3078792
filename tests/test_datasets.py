"""Loading data folders: layouts, labels, validation of bad files, reports."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cytocompare.datasets import (
    UNMAPPED,
    BadFilesError,
    LoadedDataset,
    SkippedFile,
    bundled_sample_path,
    load_dataset,
)
from cytocompare.errors import DataError

SIZE = (24, 20)  # (height, width): small, so the tests stay fast


def _jpeg(path: Path, seed: int, size: tuple[int, int] = SIZE, mode: str = "RGB") -> Path:
    """Write a random-noise JPEG (different bytes for different seeds)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[0], size[1], 3) if mode == "RGB" else size
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path, quality=90)
    return path


def _flat(root: Path, counts: dict[str, int]) -> Path:
    seed = 0
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            seed += 1
            _jpeg(root / cls / f"{cls}_{i + 1:05d}.jpg", seed)
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- layouts ----------------------------------------------------------------------------


def test_flat_layout_sorted_hashed(tmp_path: Path) -> None:
    root = _flat(tmp_path / "data", {"BLA": 3, "EOS": 2})
    progress: list[tuple[int, int]] = []
    ds = load_dataset(root, progress=lambda d, t: progress.append((d, t)))
    assert isinstance(ds, LoadedDataset)
    assert ds.layout == "flat"
    assert ds.root == root
    assert len(ds.images) == 5
    assert ds.class_counts == {"BLA": 3, "EOS": 2}
    assert list(ds.images.paths) == sorted(ds.images.paths)
    assert ds.images.labels.tolist() == ["BLA"] * 3 + ["EOS"] * 2
    assert ds.images.sha256[0] == _sha(Path(ds.images.paths[0]))
    assert ds.skipped == [] and ds.warnings == []
    assert progress[-1] == (5, 5)
    assert ds.images[0].shape == (*SIZE, 3)


def test_paper_layout_blocks_of_1000(tmp_path: Path) -> None:
    root = tmp_path / "paper"
    _jpeg(root / "BLA" / "0001-1000" / "BLA_00001.jpg", 1)
    _jpeg(root / "BLA" / "0001-1000" / "BLA_00002.jpg", 2)
    _jpeg(root / "BLA" / "1001-2000" / "BLA_01001.JPG", 3)  # upper-case extension
    _jpeg(root / "PMO" / "0001-1000" / "PMO_00001.jpeg", 4)
    (root / "PMO" / "0001-1000" / "notes.txt").write_text("not an image")
    ds = load_dataset(root)
    assert ds.layout == "paper"
    assert ds.class_counts == {"BLA": 3, "PMO": 1}
    assert any("non-image" in w for w in ds.warnings)
    # the flat reader reads the paper layout too
    assert len(load_dataset(root, layout="flat").images) == 4


def test_layouts_agree_on_order(tmp_path: Path) -> None:
    root = _flat(tmp_path / "d", {"A": 2, "B": 2})
    rows = [(f"{c}/{p.name}", c) for c in ("B", "A") for p in sorted((root / c).iterdir())]
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows(rows)
    by_manifest = load_dataset(root)
    by_folder = load_dataset(root, layout="class-folders")
    assert by_manifest.layout == "manifest"
    assert by_manifest.images.paths.tolist() == by_folder.images.paths.tolist()
    assert by_manifest.images.sha256.tolist() == by_folder.images.sha256.tolist()


def test_manifest_layout_and_sha_mismatch(tmp_path: Path) -> None:
    root = tmp_path / "m"
    good = _jpeg(root / "imgs" / "a.jpg", 1)
    other = _jpeg(root / "imgs" / "b.png", 2)
    manifest = root / "list.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "sha256", "source"])
        w.writerow(["imgs/a.jpg", "LYT", _sha(good), "x"])
        w.writerow(["imgs/b.png", "MON", "0" * 64, "x"])
    with pytest.raises(DataError, match=r"b\.png.*sha256"):
        load_dataset(manifest)
    ds = load_dataset(manifest, on_bad_file="skip")
    assert ds.layout == "manifest" and ds.root == root
    assert ds.images.labels.tolist() == ["LYT"]
    assert [s.path for s in ds.skipped] == [str(other)]
    assert "does not match the manifest" in ds.skipped[0].cause


def test_manifest_missing_columns_and_files(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("file,class\na.jpg,X\n")
    with pytest.raises(DataError, match="path, label|label, path|lacks column"):
        load_dataset(tmp_path)
    (tmp_path / "manifest.csv").write_text("path,label\nnope.jpg,X\n")
    with pytest.raises(DataError, match=r"nope\.jpg: file not found"):
        load_dataset(tmp_path, layout="manifest")


def test_bad_files_stop_or_skip(tmp_path: Path) -> None:
    root = _flat(tmp_path / "d", {"BLA": 2})
    full = _jpeg(root / "BLA" / "BLA_trunc.jpg", 99).read_bytes()
    (root / "BLA" / "BLA_trunc.jpg").write_bytes(full[: len(full) // 2])
    _jpeg(root / "BLA" / "BLA_grey.jpg", 98, mode="L")
    (root / "BLA" / "BLA_zero.jpg").write_bytes(b"")
    (root / "BLA" / "BLA_text.png").write_text("hello")
    _jpeg(root / "BLA" / "BLA_big.jpg", 97, size=(30, 40))

    with pytest.raises(DataError) as info:
        load_dataset(root, image_size=SIZE)
    msg = str(info.value)
    assert "5 bad image file(s)" in msg and "BLA_zero.jpg" in msg and "on_bad_file" in msg

    ds = load_dataset(root, image_size=SIZE, on_bad_file="skip")
    assert len(ds.images) == 2
    causes = {Path(s.path).name: s.cause for s in ds.skipped}
    assert "truncated" in causes["BLA_trunc.jpg"]
    assert "'L'" in causes["BLA_grey.jpg"]
    assert "0 bytes" in causes["BLA_zero.jpg"]
    assert "not a readable image" in causes["BLA_text.png"]
    assert causes["BLA_big.jpg"] == f"size 40x30, expected {SIZE[1]}x{SIZE[0]}"


def test_verify_false_only_lists(tmp_path: Path) -> None:
    root = _flat(tmp_path / "d", {"A": 1})
    (root / "A" / "A_zero.jpg").write_bytes(b"")
    ds = load_dataset(root, verify=False)
    assert len(ds.images) == 2 and ds.skipped == []


def test_empty_class_folder_warns(tmp_path: Path) -> None:
    root = _flat(tmp_path / "d", {"BLA": 2})
    (root / "KSC").mkdir()
    ds = load_dataset(root)
    assert ds.class_counts == {"BLA": 2, "KSC": 0}
    assert any("KSC" in w for w in ds.warnings)


def test_missing_or_empty_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "e" / "BLA").mkdir(parents=True)
    with pytest.raises(DataError, match=str(tmp_path / "e")):
        load_dataset(tmp_path / "e")
    (tmp_path / "f").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(tmp_path / "f")


def test_classes_filter_reports_excluded(tmp_path: Path) -> None:
    root = _flat(tmp_path / "d", {"BLA": 2, "EOS": 1, "PMO": 3})
    ds = load_dataset(root, classes=["BLA", "PMO", "FGC"])
    assert ds.class_counts == {"BLA": 2, "FGC": 0, "PMO": 3}
    assert any("'EOS'" in w and "1 image" in w for w in ds.warnings)
    assert any("FGC" in w for w in ds.warnings)
    assert len(ds.skipped) == 1 and "EOS" in ds.skipped[0].cause


def test_prefix_labels_with_label_map(tmp_path: Path) -> None:
    root = tmp_path / "pbc"
    for i, name in enumerate(["SNE_1.jpg", "SNE_2.jpg", "BNE_3.jpg", "MY_4.jpg", "MMY_5.jpg"]):
        _jpeg(root / "neutrophil" / name, i)
    _jpeg(root / "ig" / "PMY_6.jpg", 10)
    _jpeg(root / "platelet" / "PLATELET_7.jpg", 11)
    _jpeg(root / "platelet" / "PLATELET_8.jpg", 12)
    label_map = {"SNE": "NGS", "BNE": "NGB", "MY": "MYB", "MMY": "MMZ", "PMY": "PMO"}
    ds = load_dataset(root, label_from="prefix", label_map=label_map)
    assert ds.class_counts == {"MMZ": 1, "MYB": 1, "NGB": 1, "NGS": 2, "PMO": 1}
    assert any("'PLATELET'" in w and "2 image" in w for w in ds.warnings)
    unmapped = [s for s in ds.skipped if "not in label_map" in s.cause]
    assert len(unmapped) == 2  # reported, not silently dropped

    folder = load_dataset(root, label_map={"neutrophil": "NEU", "ig": "IG"})
    assert folder.class_counts == {"IG": 1, "NEU": 5}
    assert any("'platelet'" in w for w in folder.warnings)


def test_unmapped_predict_keeps_the_unmapped_images_with_their_own_label(tmp_path: Path) -> None:
    """Another lab's classes the model never learnt (platelets) stay in the set, labelled
    UNMAPPED, with their own label beside every image; the class filter leaves them alone."""
    root = tmp_path / "pbc"
    for i, name in enumerate(["SNE_1.jpg", "BNE_2.jpg", "BNE_3.jpg"]):
        _jpeg(root / "neutrophil" / name, i)
    _jpeg(root / "platelet" / "PLATELET_4.jpg", 11)
    label_map = {"SNE": "NGS", "BNE": "NGB"}
    ds = load_dataset(root, label_from="prefix", label_map=label_map, unmapped="predict", classes=["NGS", "NGB"])
    assert len(ds.images) == 4 and ds.skipped == [] and ds.n_unmapped == 1
    by_name = {Path(p).name: (lab, src) for p, lab, src in zip(ds.images.paths, ds.images.labels, ds.source_labels)}
    assert by_name == {"SNE_1.jpg": ("NGS", "SNE"), "BNE_2.jpg": ("NGB", "BNE"), "BNE_3.jpg": ("NGB", "BNE"),
                       "PLATELET_4.jpg": (UNMAPPED, "PLATELET")}
    assert ds.class_counts == {"NGB": 2, "NGS": 1}  # an unmapped image is no class
    assert any("'PLATELET'" in w and "not scored" in w for w in ds.warnings)

    skipped = load_dataset(root, label_from="prefix", label_map=label_map)  # the default leaves them out
    assert len(skipped.images) == 3 and skipped.n_unmapped == 0 and len(skipped.skipped) == 1
    folder = load_dataset(root)  # without a map, the own label is the label
    assert folder.source_labels.tolist() == folder.images.labels.tolist()
    with pytest.raises(ValueError, match="needs a label_map"):
        load_dataset(root, unmapped="predict")


def test_duplicates_are_reported(tmp_path: Path) -> None:
    root = _flat(tmp_path / "d", {"A": 2})
    (root / "A" / "A_copy.jpg").write_bytes((root / "A" / "A_00001.jpg").read_bytes())
    ds = load_dataset(root)
    assert len(ds.images) == 3
    assert any("byte-identical" in w for w in ds.warnings)


def test_resize_passed_to_imageset(tmp_path: Path) -> None:
    root = _flat(tmp_path / "d", {"A": 1})
    ds = load_dataset(root, resize=(10, 12))
    assert ds.images[0].shape == (10, 12, 3)


def test_write_csvs(tmp_path: Path) -> None:
    from dataclasses import replace

    from cytocompare.rundir import RunDir

    root = _flat(tmp_path / "d", {"A": 2})
    ds = load_dataset(root)
    out, empty = RunDir(tmp_path / "run").write_dataset(ds)
    assert (out.name, empty.name) == ("dataset.csv", "skipped.csv")
    rows = list(csv.DictReader(open(out)))
    assert [r["index"] for r in rows] == ["0", "1"]
    assert rows[1]["sha256"] == ds.images.sha256[1] and rows[0]["label"] == "A"
    assert empty.read_text().strip() == "path,cause"
    with_skipped = replace(ds, skipped=[SkippedFile("x.jpg", "empty file, 0 bytes")])
    _, one = RunDir(tmp_path / "run2").write_dataset(with_skipped, prefix="test_")
    assert one.name == "test_skipped.csv"
    assert list(csv.reader(open(one)))[1] == ["x.jpg", "empty file, 0 bytes"]


def test_bundled_sample() -> None:
    path = bundled_sample_path()
    assert path.name == "matek-bm-sample"
    assert path.is_dir(), "the bundled sample ships with the package (protocols/quick.yaml reads it)"
    ds = load_dataset("bundled:matek-bm-sample")
    assert len(ds.images) > 0 and ds.skipped == []


# ---- real data ----------------------------------------------------------------------------


def test_matek_bm_real(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "matek-bm", image_size=(250, 250))
    assert len(ds.images) == 2800
    assert ds.class_counts == {c: 400 for c in ["BLA", "EOS", "LYT", "MON", "NGS", "NIF", "PMO"]}
    assert ds.skipped == []
    assert ds.layout == "manifest"  # manifest.csv is present, and its hashes were verified
    flat = load_dataset(shared_data / "matek-bm", layout="flat")
    assert flat.images.sha256.tolist() == ds.images.sha256.tolist()


def test_pbc_real_label_map(shared_data: Path) -> None:
    label_map = {"BA": "BAS", "EO": "EOS", "ERB": "EBO", "LY": "LYT", "MO": "MON",
                 "SNE": "NGS", "BNE": "NGB", "MY": "MYB", "MMY": "MMZ", "PMY": "PMO"}
    ds = load_dataset(shared_data / "pbc", label_from="prefix", label_map=label_map)
    unmapped = [s for s in ds.skipped if "not in label_map" in s.cause]
    assert sum("PLATELET" in s.cause for s in unmapped) == 100
    assert any("'PLATELET'" in w and "100 image" in w for w in ds.warnings)
    assert len(ds.images) + len(unmapped) == 800
    assert set(ds.class_counts) <= set(label_map.values())


# ---- manifest paths outside the manifest's folder (issue 8.12) ------------------------------


def _manifest_with_outside_paths(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "m"
    inside = _jpeg(root / "imgs" / "a.jpg", 1)
    _jpeg(root / "imgs" / "b.jpg", 2)
    outside = _jpeg(tmp_path / "elsewhere" / "c.jpg", 3)
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerow(["imgs/a.jpg", "LYT"])
        w.writerow(["imgs/../imgs/b.jpg", "LYT"])  # a '..' that stays inside: fine
        w.writerow([str(outside), "MON"])  # absolute
        w.writerow(["../elsewhere/c.jpg", "MON"])  # leaves the folder
    return root, inside, outside


def test_manifest_paths_outside_its_folder_are_refused(tmp_path: Path) -> None:
    root, _, outside = _manifest_with_outside_paths(tmp_path)
    with pytest.raises(BadFilesError) as info:
        load_dataset(root)
    msg = str(info.value)
    assert "2 bad" in msg and "absolute path" in msg and "'..' path" in msg and "allow_outside_paths" in msg
    assert "line 4" in msg and "line 5" in msg
    # the error carries every refused entry, so stop mode can still write skipped.csv
    assert len(info.value.bad) == 2 and len(info.value.skipped) == 2

    ds = load_dataset(root, on_bad_file="skip")
    assert len(ds.images) == 2
    causes = {s.path: s.cause for s in ds.skipped}
    assert causes == {
        str(outside): "line 4: manifest path is an absolute path; set data.allow_outside_paths: true to allow it",
        str(root / "../elsewhere/c.jpg"): "line 5: manifest path is a '..' path that leaves the manifest's folder; "
                                          "set data.allow_outside_paths: true to allow it",
    }
    allowed = load_dataset(root, allow_outside_paths=True)
    assert len(allowed.images) == 4 and allowed.skipped == []

    # stop mode names the refused paths and the bad files in one error
    (root / "imgs" / "b.jpg").write_bytes(b"")
    with pytest.raises(BadFilesError) as info:
        load_dataset(root)
    assert "3 bad image file(s) of 4" in str(info.value) and "b.jpg: empty file" in str(info.value)


# ---- ignored files are named (issue 8.13) ---------------------------------------------------


def test_ignored_files_are_named_in_skipped(tmp_path: Path) -> None:
    import os

    root = _flat(tmp_path / "d", {"BLA": 2, "EOS": 1})
    (root / "BLA" / "notes.txt").write_text("not an image")
    (root / "BLA" / ".DS_Store").write_bytes(b"\0")
    _jpeg(root / "BLA" / ".hidden_cell.jpg", 50)
    os.symlink("does-not-exist.jpg", root / "EOS" / "EOS_broken.jpg")
    (root / "EOS" / ".thumbnails").mkdir()
    _jpeg(root / "EOS" / ".thumbnails" / "t.jpg", 51)
    os.symlink(root / "BLA", root / "EOS" / "linked_folder")
    _jpeg(root / "stray.jpg", 52)
    (root / "README.md").write_text("about the data")
    _jpeg(root / "_unsorted" / "x.jpg", 53)

    for mode in ("skip", "stop"):  # ignored files are not bad: stop mode runs too
        ds = load_dataset(root, on_bad_file=mode)
        assert len(ds.images) == 3
        causes = {str(Path(s.path).relative_to(root)): s.cause for s in ds.skipped}
        assert set(causes) == {"BLA/notes.txt", "BLA/.DS_Store", "BLA/.hidden_cell.jpg", "EOS/EOS_broken.jpg",
                               "EOS/.thumbnails", "EOS/linked_folder", "stray.jpg", "README.md", "_unsorted/x.jpg"}
        assert all(c.startswith("ignored: ") for c in causes.values())
        assert "not an image file name (.txt" in causes["BLA/notes.txt"]
        assert "hidden file" in causes["BLA/.DS_Store"] and "hidden file" in causes["BLA/.hidden_cell.jpg"]
        assert "broken symbolic link" in causes["EOS/EOS_broken.jpg"]
        assert "hidden folder" in causes["EOS/.thumbnails"] and "1 file(s)" in causes["EOS/.thumbnails"]
        assert "link to a folder" in causes["EOS/linked_folder"]
        assert "not inside a class folder" in causes["stray.jpg"] == causes["README.md"]
        assert "'_'" in causes["_unsorted/x.jpg"]
        assert any("stray.jpg" in w for w in ds.warnings)


def test_listing_order_of_images_and_ignored_files(tmp_path: Path) -> None:
    # the listing walks each class folder top-down with sorted names: a folder's ignored
    # sub-folders, then its files, then its sub-folders in turn; images come out sorted by path
    import os

    root = tmp_path / "d"
    for rel, seed in [("BLA/b.jpg", 1), ("BLA/a.jpg", 2), ("BLA/0001-1000/c.jpg", 3), ("BLA/1001-2000/d.JPG", 4),
                      ("BLA/0001-1000/.x/hidden.jpg", 5), ("BLA/.hid.jpg", 6), ("EOS/e.jpg", 7)]:
        _jpeg(root / rel, seed)
    (root / "BLA" / "notes.txt").write_text("x")
    (root / "BLA" / "a.").write_text("x")
    os.symlink(root / "EOS", root / "BLA" / "z_link")
    os.symlink("missing.jpg", root / "EOS" / "broken.jpg")
    os.symlink(root / "BLA" / "a.jpg", root / "EOS" / "f.jpg")  # a link to a file is read
    ds = load_dataset(root, on_bad_file="skip")
    assert [str(Path(p).relative_to(root)) for p in ds.images.paths] == [
        "BLA/0001-1000/c.jpg", "BLA/1001-2000/d.JPG", "BLA/a.jpg", "BLA/b.jpg", "EOS/e.jpg", "EOS/f.jpg"]
    assert [(str(Path(s.path).relative_to(root)), s.cause.split(" (")[0]) for s in ds.skipped] == [
        ("BLA/z_link", "ignored: symbolic link to a folder below a class folder"),
        ("BLA/.hid.jpg", "ignored: hidden file"),
        ("BLA/a.", "ignored: not an image file name"),
        ("BLA/notes.txt", "ignored: not an image file name"),
        ("BLA/0001-1000/.x", "ignored: hidden folder"),
        ("EOS/broken.jpg", "ignored: broken symbolic link"),
    ]
    assert ds.layout == "paper" and ds.class_counts == {"BLA": 4, "EOS": 2}


def test_broken_link_in_a_manifest_is_named_as_such(tmp_path: Path) -> None:
    import os

    _jpeg(tmp_path / "a.jpg", 1)
    os.symlink("gone.jpg", tmp_path / "b.jpg")
    (tmp_path / "manifest.csv").write_text("path,label\na.jpg,LYT\nb.jpg,LYT\n")
    ds = load_dataset(tmp_path, on_bad_file="skip")
    assert [(Path(s.path).name, s.cause) for s in ds.skipped] == [
        ("b.jpg", "broken symbolic link (its target does not exist)")]


def test_bundled_sample_and_its_attribution_give_no_ignored_rows() -> None:
    # ATTRIBUTION.md sits beside the sample folders, not inside them: nothing is ignored
    assert (bundled_sample_path().parent / "ATTRIBUTION.md").is_file()
    for name in ("matek-bm-sample", "pbc-sample"):
        ds = load_dataset(f"bundled:{name}")
        assert ds.skipped == [], ds.skipped[:3]


# ---- perceptual hashes in the data check (issue 8.17) ---------------------------------------


def test_perceptual_hashes_are_computed_in_the_check(tmp_path: Path) -> None:
    from cytocompare.near_duplicates import perceptual_hash

    root = _flat(tmp_path / "d", {"BLA": 3, "EOS": 2})
    (root / "BLA" / "BLA_zero.jpg").write_bytes(b"")
    ds = load_dataset(root, on_bad_file="skip", perceptual_hashes=True, n_jobs=2)
    assert ds.perceptual_hashes is not None and ds.perceptual_hashes.shape == (5, 2)
    assert ds.perceptual_hashes.dtype == np.uint64
    for k, path in enumerate(ds.images.paths):  # in the images' order, as of the decoded file
        np.testing.assert_array_equal(ds.perceptual_hashes[k], perceptual_hash(path))
    assert ds.perceptual_hash_seconds > 0 and ds.check_seconds >= 0
    assert load_dataset(root, on_bad_file="skip").perceptual_hashes is None
    with pytest.raises(ValueError, match="verify"):
        load_dataset(root, verify=False, perceptual_hashes=True)
