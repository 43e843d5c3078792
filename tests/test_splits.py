"""Split plans: stratified, duplicate-safe, seeded, small-class policies, stored and reloaded."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pydantic import ValidationError

from cytocompare.errors import SplitError
from cytocompare.rundir import RunDir
from cytocompare.splits import ExternalSpec, Fold, HoldoutSpec, KFoldSpec, SplitPlan, as_split_spec, make_plan

KFOLD = {"cv": KFoldSpec(n_splits=5)}


def _data(counts: dict[str, int], n_dup: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and unique fake hashes; ``n_dup`` images then get a copy (same label, same sha)."""
    labels = np.asarray([c for c, n in counts.items() for _ in range(n)], dtype=object)
    sha = np.asarray([f"{i:064x}" for i in range(len(labels))], dtype=object)
    rng = np.random.default_rng(seed)
    src = rng.choice(len(labels), size=n_dup, replace=False)
    labels = np.concatenate([labels, labels[src]])
    sha = np.concatenate([sha, sha[src]])
    return labels, sha


def _assert_no_sha_on_both_sides(plan: SplitPlan, sha: np.ndarray) -> None:
    for name in plan.split_names:
        for fold in plan.folds(name):
            if fold.test_source == "train":
                assert not set(sha[fold.train]) & set(sha[fold.test]), f"{name}: a sha is on both sides"


def test_kfold_partitions_and_stratifies() -> None:
    labels, sha = _data({"A": 50, "B": 30, "C": 20})
    plan = make_plan(labels, sha, KFOLD, seed=1)
    folds = plan.folds("cv")
    assert len(folds) == 5
    all_test = np.concatenate([f.test for f in folds])
    assert sorted(all_test.tolist()) == list(range(len(labels)))  # each image tested exactly once
    for f in folds:
        assert not set(f.train) & set(f.test)
        assert len(f.train) + len(f.test) == len(labels)
        assert Counter(labels[f.test]) == {"A": 10, "B": 6, "C": 4}


def test_holdout_stratified() -> None:
    labels, sha = _data({"A": 70, "B": 30})
    plan = make_plan(labels, sha, {"ho": {"kind": "holdout", "test_size": 0.3}}, seed=3)
    (fold,) = plan.folds("ho")
    assert Counter(labels[fold.test]) == {"A": 21, "B": 9}
    assert sorted(np.concatenate([fold.train, fold.test]).tolist()) == list(range(100))


def test_duplicates_never_on_both_sides() -> None:
    labels, sha = _data({"A": 40, "B": 40, "C": 25}, n_dup=30)
    specs = {"cv": KFoldSpec(n_splits=5), "ho": HoldoutSpec(test_size=0.3)}
    for seed in range(5):
        plan = make_plan(labels, sha, specs, seed=seed)
        _assert_no_sha_on_both_sides(plan, sha)
        tested = np.concatenate([f.test for f in plan.folds("cv")])
        assert sorted(tested.tolist()) == list(range(len(labels)))


def test_conflicting_duplicate_labels_raise() -> None:
    labels, sha = _data({"A": 10, "B": 10})
    sha[15] = sha[2]  # same bytes, labelled A and B
    paths = np.asarray([f"img/{i}.jpg" for i in range(20)], dtype=object)
    with pytest.raises(SplitError, match=r"img/2\.jpg \(A\).*img/15\.jpg \(B\)"):
        make_plan(labels, sha, KFOLD, seed=0, paths=paths)


def test_small_class_error_names_class_and_options() -> None:
    labels, sha = _data({"A": 20, "B": 20, "FGC": 3})
    with pytest.raises(SplitError) as info:
        make_plan(labels, sha, KFOLD, seed=0)
    msg = str(info.value)
    assert "'FGC' (3 unique images)" in msg and "5-fold" in msg
    assert "drop" in msg and "train_only" in msg


def test_small_class_counts_unique_images() -> None:
    labels, sha = _data({"A": 20, "B": 3})
    # three copies of B images make 6 files but still 3 unique ones
    labels = np.concatenate([labels, ["B"] * 3])
    sha = np.concatenate([sha, sha[20:23]])
    with pytest.raises(SplitError, match="'B' \\(3 unique"):
        make_plan(labels, sha, KFOLD, seed=0)


def test_small_class_drop(tmp_path: Path) -> None:
    labels, sha = _data({"A": 20, "B": 20, "FGC": 3})
    plan = make_plan(labels, sha, KFOLD, seed=0, small_classes="drop")
    fgc = set(np.flatnonzero(labels == "FGC"))
    for f in plan.folds("cv"):
        assert not fgc & set(f.train) and not fgc & set(f.test)
    assert sorted(np.concatenate([f.test for f in plan.folds("cv")]).tolist()) == list(range(40))
    assert [(e.label, e.n_unique, e.policy) for e in plan.excluded] == [("FGC", 3, "drop")]
    meta = json.loads(plan.to_json_text())
    assert meta["excluded"][0]["label"] == "FGC" and "left out" in meta["excluded"][0]["description"]


def test_small_class_train_only() -> None:
    labels, sha = _data({"A": 20, "B": 20, "FGC": 3})
    plan = make_plan(labels, sha, KFOLD, seed=0, small_classes="train_only")
    fgc = set(np.flatnonzero(labels == "FGC"))
    for f in plan.folds("cv"):
        assert fgc <= set(f.train) and not fgc & set(f.test)
    assert plan.excluded[0].policy == "train_only"


def test_holdout_needs_two_per_class() -> None:
    labels, sha = _data({"A": 20, "B": 20, "X": 1})
    with pytest.raises(SplitError, match="'X' \\(1 unique"):
        make_plan(labels, sha, {"ho": HoldoutSpec()}, seed=0)
    plan = make_plan(labels, sha, {"ho": HoldoutSpec()}, seed=0, small_classes="drop")
    assert 40 not in plan.folds("ho")[0].train


def test_seeded_and_deterministic() -> None:
    labels, sha = _data({"A": 30, "B": 30, "C": 12}, n_dup=6)
    specs = {"cv": KFoldSpec(n_splits=4), "ho": HoldoutSpec(test_size=0.2)}
    a = make_plan(labels, sha, specs, seed=7)
    b = make_plan(labels.copy(), sha.copy(), specs, seed=7)
    c = make_plan(labels, sha, specs, seed=8)
    assert a.hash == b.hash
    for name in specs:
        for fa, fb in zip(a.folds(name), b.folds(name)):
            np.testing.assert_array_equal(fa.test, fb.test)
            np.testing.assert_array_equal(fa.train, fb.train)
    assert a.hash != c.hash
    assert any(not np.array_equal(x.test, y.test) for x, y in zip(a.folds("cv"), c.folds("cv")))


def test_external_split() -> None:
    labels, sha = _data({"A": 5, "B": 5})
    ext = np.asarray(["A", "B", "B"])
    plan = make_plan(labels, sha, {"ext": ExternalSpec()}, seed=0,
                     external_labels=ext, external_sha256=np.asarray([sha[0], "f" * 64, "e" * 64]))
    (fold,) = plan.folds("ext")
    assert fold.test_source == "external"
    np.testing.assert_array_equal(fold.train, np.arange(10))
    np.testing.assert_array_equal(fold.test, np.arange(3))
    assert any("byte-identical" in w for w in plan.warnings)
    with pytest.raises(SplitError, match="external"):
        make_plan(labels, sha, {"ext": ExternalSpec()}, seed=0)


def test_roundtrip_files_and_changed_dataset(tmp_path: Path) -> None:
    labels, sha = _data({"A": 20, "B": 15, "C": 3}, n_dup=4)
    paths = np.asarray([f"d/{i}.jpg" for i in range(len(labels))], dtype=object)
    specs = {"cv": KFoldSpec(n_splits=5), "ho": HoldoutSpec(test_size=0.3),
             "ext": ExternalSpec()}
    ext = np.asarray(["A", "B"])
    plan = make_plan(labels, sha, specs, seed=11, small_classes="train_only", external_labels=ext)
    run = RunDir(tmp_path)
    run.write_split_plan(plan, paths, labels)

    header = (tmp_path / "splits.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["index", "path", "label"] and "cv/fold-4" in header and "ext/fold-0" in header
    meta = json.loads((tmp_path / "splits.json").read_text())
    assert meta["seed"] == 11 and meta["hash"] == plan.hash
    assert sum(f["test_counts"].get("A", 0) for f in meta["splits"]["cv"]["folds"]) == int((labels == "A").sum())

    back = run.read_split_plan(labels=labels, sha256=sha, external_labels=ext)
    assert back.hash == plan.hash
    for name in specs:
        for f0, f1 in zip(plan.folds(name), back.folds(name)):
            assert isinstance(f1, Fold) and f0.test_source == f1.test_source
            np.testing.assert_array_equal(f0.train, f1.train)
            np.testing.assert_array_equal(f0.test, f1.test)

    changed = sha.copy()
    changed[0] = "9" * 64
    with pytest.raises(SplitError, match="changed"):
        run.read_split_plan(labels=labels, sha256=changed)

    text = (tmp_path / "splits.csv").read_text().splitlines()
    row = text[1].split(",")
    row[3] = "test" if row[3] == "train" else "train"
    (tmp_path / "splits.csv").write_text("\n".join([text[0], ",".join(row), *text[2:]]) + "\n")
    with pytest.raises(SplitError, match="hash"):
        run.read_split_plan()
    (tmp_path / "splits.csv").unlink()
    with pytest.raises(SplitError, match="not found"):
        run.read_split_plan()


def test_unknown_split_and_bad_specs() -> None:
    labels, sha = _data({"A": 10, "B": 10})
    plan = make_plan(labels, sha, KFOLD, seed=0)
    with pytest.raises(SplitError, match="unknown split 'nope'"):
        plan.folds("nope")
    with pytest.raises(ValidationError):
        KFoldSpec(n_splits=1)
    with pytest.raises(ValidationError):
        HoldoutSpec(test_size=0)  # no longer quietly turned into 0.2
    with pytest.raises(SplitError):
        make_plan(labels, sha, {"cv": {"kind": "kfold", "n_splits": 1}}, seed=0)
    with pytest.raises(SplitError, match="stratified"):  # the one spelling is 'stratify'
        as_split_spec({"kind": "kfold", "stratified": False})
    with pytest.raises(SplitError):
        make_plan(labels, sha, KFOLD, seed=0, small_classes="ignore")  # type: ignore[arg-type]


def test_stored_spec_keeps_the_format_1_record_and_hash() -> None:
    """splits.json and the plan hash hold the same five keys for every kind, as format 1 wrote
    them, so that plans stored before the protocol's split models became the only ones still load."""
    labels, sha = _data({"A": 10, "B": 10})
    specs = {"cv": KFoldSpec(n_splits=5), "ho": HoldoutSpec(test_size=0.3), "ext": ExternalSpec()}
    plan = make_plan(labels, sha, specs, seed=0, external_labels=np.asarray(["A"]))
    stored = json.loads(plan.to_json_text())["splits"]
    assert stored["cv"]["spec"] == {"kind": "kfold", "test_size": 0.2, "n_splits": 5, "stratify": True, "shuffle": True}
    assert stored["ho"]["spec"] == {"kind": "holdout", "test_size": 0.3, "n_splits": 5, "stratify": True, "shuffle": True}
    assert stored["ext"]["spec"] == {"kind": "external", "test_size": 0.2, "n_splits": 5, "stratify": True,
                                     "shuffle": True}


def test_stratify_and_shuffle_switches() -> None:
    labels, sha = _data({"A": 50, "B": 30, "C": 20})
    ordered = make_plan(labels, sha, {"cv": KFoldSpec(n_splits=5, shuffle=False, stratify=False)}, seed=1)
    # unshuffled, unstratified folds are consecutive blocks of the (sorted) duplicate groups
    assert [f.test.tolist() for f in ordered.folds("cv")] == [list(range(i, i + 20)) for i in range(0, 100, 20)]
    a = make_plan(labels, sha, {"cv": KFoldSpec(n_splits=5, shuffle=False)}, seed=1)
    b = make_plan(labels, sha, {"cv": KFoldSpec(n_splits=5, shuffle=False)}, seed=2)
    assert a.hash != ordered.hash
    assert [f.test.tolist() for f in a.folds("cv")] == [f.test.tolist() for f in b.folds("cv")]  # no seed used


# ---- near-duplicates (issue 8.17) ---------------------------------------------------------


def _hashes(n: int, seed: int = 0) -> np.ndarray:
    """Random 128-bit hashes: any two are ~64 bits apart, far beyond any threshold used here."""
    return np.random.default_rng(seed).integers(0, 2**63, (n, 2), dtype=np.int64).astype(np.uint64)


def _same_side_everywhere(plan: SplitPlan, i: int, j: int) -> bool:
    for name in plan.split_names:
        for fold in plan.folds(name):
            if (i in fold.test) != (j in fold.test) or (i in fold.train) != (j in fold.train):
                return False
    return True


@pytest.fixture(scope="module")
def sample_with_reencoded_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, int, int]:
    """The bundled sample plus one cell re-encoded as JPEG quality 75 under another name."""
    import shutil

    from PIL import Image

    from cytocompare.datasets import bundled_sample_path, load_dataset

    root = tmp_path_factory.mktemp("near") / "data"
    shutil.copytree(bundled_sample_path(), root)
    original = sorted((root / "EOS").iterdir())[3]
    with Image.open(original) as im:
        im.convert("RGB").save(root / "EOS" / "zz_copy_of_a_cell.jpg", quality=75)
    loaded = load_dataset(root, perceptual_hashes=True, n_jobs=2)
    paths = [str(p) for p in loaded.images.paths]
    i, j = paths.index(str(original)), paths.index(str(root / "EOS" / "zz_copy_of_a_cell.jpg"))
    assert loaded.images.sha256[i] != loaded.images.sha256[j]  # not a byte duplicate
    return loaded, i, j


def test_reencoded_copy_of_a_cell_stays_on_one_side_of_every_split(sample_with_reencoded_copy) -> None:
    loaded, i, j = sample_with_reencoded_copy
    specs = {"cv": KFoldSpec(n_splits=5), "ho": HoldoutSpec(test_size=0.3)}
    images = loaded.images
    straddled = 0
    for seed in range(6):
        plan = make_plan(images.labels, images.sha256, specs, seed=seed, paths=images.paths,
                         near_duplicate_hashes=loaded.perceptual_hashes, near_duplicate_threshold=16)
        assert _same_side_everywhere(plan, i, j), f"seed {seed}: the copy leaks across a split"
        assert plan.near_duplicate_info == {"threshold": 16, "groups": 1, "images": 2, "mixed_label_groups": 0}
        header, rows = plan.near_duplicate_table()
        assert header == ["group", "path", "label", "nearest", "distance"]
        assert sorted(r[1] for r in rows) == sorted([images.paths[i], images.paths[j]])
        assert all(r[2] == "EOS" and r[4] <= 16 for r in rows)
        tested = np.concatenate([f.test for f in plan.folds("cv")])
        assert sorted(tested.tolist()) == list(range(len(images)))  # still a partition
        # without near-duplicate grouping (today's behaviour) the copy is free to leak
        byte_only = make_plan(images.labels, images.sha256, specs, seed=seed)
        straddled += not _same_side_everywhere(byte_only, i, j)
    assert straddled > 0, "the test would not notice a leak: the pair never straddled without grouping"


def test_near_duplicate_plan_without_groups_hashes_as_before_and_roundtrips(tmp_path: Path) -> None:
    labels, sha = _data({"A": 30, "B": 20}, n_dup=5)
    h = _hashes(len(labels))
    _, first = np.unique(sha, return_index=True)
    h = h[first[np.unique(sha, return_inverse=True)[1]]]  # byte duplicates hash alike
    specs = {"cv": KFoldSpec(n_splits=5), "ho": HoldoutSpec()}
    plain = make_plan(labels, sha, specs, seed=3)
    near = make_plan(labels, sha, specs, seed=3, near_duplicate_hashes=h, near_duplicate_threshold=16)
    assert near.near_duplicate_info is None and near.hash == plain.hash
    assert near.to_json_text() == plain.to_json_text()
    assert len(near.near_duplicate_table()[1]) == 10  # the 5 byte-identical pairs, distance 0

    h2 = h.copy()
    h2[7] = h2[3] ^ np.uint64(0b111)  # image 7 becomes a near copy of image 3 (both class A)
    merged = make_plan(labels, sha, specs, seed=3, near_duplicate_hashes=h2, near_duplicate_threshold=16)
    assert merged.near_duplicate_info is not None and merged.hash != plain.hash
    assert _same_side_everywhere(merged, 3, 7)
    run = RunDir(tmp_path)
    paths = np.asarray([f"d/{k}.jpg" for k in range(len(labels))], dtype=object)
    run.write_split_plan(merged, paths, labels)
    back = run.read_split_plan(labels=labels, sha256=sha)
    assert back.hash == merged.hash and back.near_duplicate_info == merged.near_duplicate_info
    with pytest.raises(SplitError, match="perceptual hashes"):
        make_plan(labels, sha, specs, seed=3, near_duplicate_threshold=16)


def test_near_duplicates_with_mixed_labels_warn_and_take_the_most_common_label() -> None:
    labels, sha = _data({"A": 30, "B": 30})
    h = _hashes(len(labels))
    for k in (31, 32):  # two B images that are near copies of A image 0
        h[k] = h[0] ^ np.uint64(1 << k)
    h[1] = h[0] ^ np.uint64(1 << 5)  # and one more A copy: the group is A, A, B, B -> tie -> A
    paths = np.asarray([f"img/{k}.jpg" for k in range(len(labels))], dtype=object)
    plan = make_plan(labels, sha, {"cv": KFoldSpec(n_splits=5)}, seed=0, paths=paths,
                     near_duplicate_hashes=h, near_duplicate_threshold=4)
    assert plan.near_duplicate_info["mixed_label_groups"] == 1
    assert any("different labels" in w and "img/31.jpg (B)" in w for w in plan.warnings)
    group = [0, 1, 31, 32]
    for fold in plan.folds("cv"):
        assert len(set(group) & set(fold.test.tolist())) in (0, 4)
    # byte-identical files with different labels stay an error, near-duplicates or not
    sha[40] = sha[2]
    with pytest.raises(SplitError, match="byte-identical"):
        make_plan(labels, sha, {"cv": KFoldSpec(n_splits=5)}, seed=0, near_duplicate_hashes=h,
                  near_duplicate_threshold=4)


def test_external_near_duplicates_warn() -> None:
    labels, sha = _data({"A": 20, "B": 20})
    h = _hashes(len(labels))
    ext_labels = np.asarray(["A", "B", "A"])
    ext_sha = np.asarray([f"{k:064x}" for k in range(100, 103)])
    ext_h = _hashes(3, seed=9)
    ext_h[1] = h[25] ^ np.uint64(3)  # a re-encoded training image in the test set
    plan = make_plan(labels, sha, {"ext": ExternalSpec()}, seed=0, external_labels=ext_labels,
                     external_sha256=ext_sha, near_duplicate_hashes=h, near_duplicate_threshold=16,
                     external_near_duplicate_hashes=ext_h, external_paths=["t0.jpg", "t1.jpg", "t2.jpg"])
    assert plan.external_near_duplicates == [(25, 1, 4)]  # 2 bits in each of the 2 words
    assert any("near-duplicates of training images" in w and "t1.jpg" in w for w in plan.warnings)
    paths = [f"train{k}.jpg" for k in range(len(labels))]
    assert plan.external_near_duplicate_table(paths, ["t0.jpg", "t1.jpg", "t2.jpg"]) == (
        ["path", "test_path", "distance"], [["train25.jpg", "t1.jpg", 4]])
    # byte-identical train/test pairs keep their own warning and are not listed twice
    ext_sha[1] = sha[25]
    again = make_plan(labels, sha, {"ext": ExternalSpec()}, seed=0, external_labels=ext_labels,
                      external_sha256=ext_sha, near_duplicate_hashes=h, near_duplicate_threshold=16,
                      external_near_duplicate_hashes=ext_h)
    assert again.external_near_duplicates == []
    assert any("byte-identical to training images" in w for w in again.warnings)
