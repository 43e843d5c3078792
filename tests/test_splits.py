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
