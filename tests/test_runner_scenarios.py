"""Runner scenarios the end-to-end tests of ``test_runner.py`` do not reach: an external split on
``test_data``, colour normalisation of that test set, byte-duplicate files, the small-class policy
across two splits and the "data changed" refusal of a resumed run.

Every scenario runs the real command line on small synthetic image folders (64 x 64 px cells
that a colour classifier separates) and checks what lands in the run directory's files.
Two of them pin bugs of issue 8 that are fixed (8.1: per-class rows of each split; 8.6: a refused
resume writes nothing).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cytocompare.cli import cli
from cytocompare.colour import lab_to_rgb, rgb_to_lab
from cytocompare.testing.datasets import make_cell

# nucleus radius (fraction of the image) and colour per class; one cytoplasm colour for all
LOOKS = {"BLA": (0.2, (90, 40, 140)), "LYT": (0.32, (60, 30, 110)), "NGS": (0.12, (120, 60, 170))}
# another lab's stain: a global, dataset-level shift in L*a*b* (darker, redder, bluer)
OTHER_LAB = (np.array([0.85, 1.0, 1.0]), np.array([-5.0, 12.0, -18.0]))


def make_images(root: Path, n: int = 10, seed: int = 0, other_lab: bool = False,
                folder: str = "{cls}") -> Path:
    """``n`` synthetic cells per class, saved as ``<folder>/<CLS>_<i>.jpg``."""
    rng = np.random.default_rng(seed)
    for cls, (frac, nucleus) in LOOKS.items():
        (root / folder.format(cls=cls)).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = make_cell(64, frac, nucleus, (225, 180, 200), rng)
            if other_lab:
                scale, shift = OTHER_LAB
                img = lab_to_rgb(rgb_to_lab(img) * scale + shift)
            Image.fromarray(img).save(root / folder.format(cls=cls) / f"{cls}_{i:05d}.jpg", quality=95)
    return root


def write_protocol(tmp: Path, data: Path, splits: dict[str, str], methods: str | None = None,
                   extra: str = "", name: str = "protocol.yaml") -> Path:
    """A protocol of the image classifier ``colour-logreg`` on every split (or ``methods``)."""
    split_lines = "\n".join(f"  {k}: {v}" for k, v in splits.items())
    methods = methods or f"  colour:\n    classifier: {{name: colour-logreg}}\n    splits: [{', '.join(splits)}]"
    path = tmp / name
    path.write_text(
        f"version: 1\nname: scenario\nseed: 5\ndata: {{path: {data}, image_size: [64, 64]}}\n"
        f"splits:\n{split_lines}\nmethods:\n{methods}\nreports: []\ncache_dir: {tmp / 'cache'}\n"
        # synthetic cells differ only by noise: a perceptual hash rightly calls them near-duplicates
        f"near_duplicates: {{threshold: null}}\n{extra}")
    return path


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(cli, ["run", *args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def accuracy(rows: list[dict[str, str]]) -> float:
    return float(np.mean([r["truth"] == r["prediction"] for r in rows]))


def per_class_rows(run_dir: Path, split: str, metric: str = "recall_strict") -> dict[str, list[float]]:
    """``metrics/long.csv``: class -> values of one per-class metric over the folds of a split."""
    found: dict[str, list[float]] = defaultdict(list)
    for r in read_csv(run_dir / "metrics" / "long.csv"):
        if r["split"] == split and r["metric"] == metric and r["class"]:
            found[r["class"]].append(float(r["value"]))
    return dict(found)


# ---------------------------------------------------------------------------- external split
EXTERNAL_TEST_DATA = ("test_data: {{path: {test}, label_from: prefix, label_map: {{{label_map}}}, "
                      "image_size: [64, 64], colour_normalize: {norm}}}\n")


@pytest.fixture(scope="module")
def two_labs(tmp_path_factory) -> tuple[Path, Path]:
    """A development set and an external test set stained by another lab, whose folders do not
    carry the label (``BLA-cells/BLA_00001.jpg``: it comes from the file-name prefix)."""
    root = tmp_path_factory.mktemp("labs")
    train = make_images(root / "train", n=10)
    test = make_images(root / "test", n=8, seed=1, other_lab=True, folder="{cls}-cells")
    return train, test


def test_external_split_trains_on_all_data_and_tests_on_test_data(tmp_path: Path, two_labs):
    train, test = two_labs
    protocol = write_protocol(tmp_path, train, {"ext": "{kind: external}", "ho": "{kind: holdout, test_size: 0.3}"},
                              extra=EXTERNAL_TEST_DATA.format(test=test, norm="reinhard", label_map="BLA: BLA, LYT: LYT"))
    out = tmp_path / "run"
    run(str(protocol), "-o", str(out))

    # the test set is read with its own keys: labels from the prefix, NGS not in label_map -> named, not used
    tested = read_csv(out / "test_dataset.csv")
    assert len(tested) == 16 and {r["label"] for r in tested} == {"BLA", "LYT"}
    skipped = read_csv(out / "test_skipped.csv")
    assert len(skipped) == 8 and all("NGS_" in Path(r["path"]).name and "label_map" in r["cause"] for r in skipped)
    assert read_csv(out / "skipped.csv") == []

    # one fold: trained on every development image, tested on every test image, none of the development set
    preds = read_csv(out / "predictions" / "colour" / "ext" / "fold-0.csv")
    assert sorted(r["path"] for r in preds) == sorted(r["path"] for r in tested)
    assert all(Path(r["path"]).is_relative_to(test) for r in preds)
    assert [r["truth"] for r in preds] == [t["label"] for t in sorted(tested, key=lambda t: int(t["index"]))]
    info = json.loads((out / "predictions" / "colour" / "ext" / "fold-0.json").read_text())
    assert (info["test_source"], info["n_train"], info["n_test"]) == ("external", 30, 16)
    assert {r["ext/fold-0"] for r in read_csv(out / "splits.csv")} == {"train"}
    assert json.loads((out / "run.json").read_text())["test_data"] == str(test)

    # the external evaluator runs on the external split only
    coverage = {r["split"] for r in read_csv(out / "metrics" / "long.csv") if r["metric"] == "coverage"}
    assert coverage == {"ext"}
    summary = {(r["split"], r["metric"]): float(r["mean"]) for r in read_csv(out / "metrics" / "summary.csv")
               if r["method"] == "colour" and not r["class"]}
    assert summary["ext", "accuracy_strict"] == pytest.approx(accuracy(preds))
    recalls = [accuracy([r for r in preds if r["truth"] == c]) for c in ("BLA", "LYT")]
    assert summary["ext", "balanced_accuracy_strict"] == pytest.approx(np.mean(recalls))


def test_colour_normalisation_maps_the_other_lab_onto_the_training_colours(tmp_path: Path, two_labs):
    """Reinhard on test_data rescues a colour classifier on another lab's stain, and leaves the
    development set alone; a feature pipeline with a cache gets the normalised images too."""
    train, test = two_labs
    methods = ("  colour:\n    classifier: {name: colour-logreg}\n    splits: [ext, ho]\n"
               "  colour-svm:\n    features: {name: colour-stats}\n"
               "    classifier: {name: svm-rbf, params: {param_grid: null}}\n    splits: [ext]")
    runs = {}
    for norm in ("none", "reinhard"):  # one feature cache for both runs, as on a real machine
        protocol = write_protocol(tmp_path, train, {"ext": "{kind: external}", "ho": "{kind: holdout}"}, methods,
                                  extra=EXTERNAL_TEST_DATA.format(test=test, norm=norm, label_map="BLA: BLA, LYT: LYT, NGS: NGS"), name=f"{norm}.yaml")
        runs[norm] = tmp_path / f"run-{norm}"
        result = run(str(protocol), "-o", str(runs[norm]))
        assert ("colour-normalised" in result.output) == (norm == "reinhard")

    def ext_accuracy(norm: str, method: str) -> float:
        return accuracy(read_csv(runs[norm] / "predictions" / method / "ext" / "fold-0.csv"))

    # the other lab's colours fool both; mapped back, the cells are recognised again (the colour
    # histograms of the feature pipeline less well than the image classifier: measured 0.71 and 0.96,
    # from 0.33 without the map, and 1.0 for both on the same cells stained like the training set)
    for method, floor in (("colour", 0.9), ("colour-svm", 0.6)):
        assert ext_accuracy("none", method) <= 0.5, method
        assert ext_accuracy("reinhard", method) >= floor, method
    # only the test set is transformed: the holdout on the development set is the same, byte for byte
    ho = "predictions/colour/ho/fold-0.csv"
    assert (runs["none"] / ho).read_bytes() == (runs["reinhard"] / ho).read_bytes()


# ---------------------------------------------------------------------------- byte duplicates
def test_byte_duplicates_land_on_one_side_of_every_split(tmp_path: Path):
    data = make_images(tmp_path / "data", n=10)
    groups = []
    for cls in LOOKS:  # three images per class, each also saved under two more names
        for i in range(3):
            original = data / cls / f"{cls}_{i:05d}.jpg"
            copies = [data / cls / f"{cls}_copy{i}_{j}.jpg" for j in range(2)]
            for c in copies:
                shutil.copyfile(original, c)
            groups.append({str(original), *map(str, copies)})
    protocol = write_protocol(tmp_path, data, {"cv5": "{kind: kfold, n_splits: 5}", "ho": "{kind: holdout, test_size: 0.3}"})
    out = tmp_path / "run"
    result = run(str(protocol), "-o", str(out))
    assert "duplicate" in result.output

    rows = read_csv(out / "splits.csv")
    assert len(rows) == 48  # every copy is used, none dropped
    by_path = {r["path"]: r for r in rows}
    columns = [c for c in rows[0] if "/fold-" in c]
    assert len(columns) == 6
    for group in groups:
        for col in columns:
            sides = {by_path[p][col] for p in group}
            assert len(sides) == 1, f"{sorted(group)} straddle {col}: {sides}"
    # and the predictions agree: the copies of an image are tested in one and the same fold
    for split, n_folds in (("cv5", 5), ("ho", 1)):
        fold_of: dict[str, int] = {}
        for k in range(n_folds):
            for r in read_csv(out / "predictions" / "colour" / split / f"fold-{k}.csv"):
                assert r["path"] not in fold_of
                fold_of[r["path"]] = k
        for group in groups:
            assert len({fold_of.get(p, -1) for p in group}) == 1, (split, sorted(group))
    assert len(fold_of) < 48  # a holdout tests a part only, so the check above is not vacuous for "ho"


def test_byte_duplicates_with_two_labels_stop_the_run_naming_both(tmp_path: Path):
    data = make_images(tmp_path / "data", n=6)
    shutil.copyfile(data / "BLA" / "BLA_00000.jpg", data / "LYT" / "LYT_looks_like_a_blast.jpg")
    out = tmp_path / "run"
    result = run(str(write_protocol(tmp_path, data, {"ho": "{kind: holdout}"})), "-o", str(out), ok=False)
    assert result.exit_code == 2
    assert "BLA_00000.jpg" in result.output and "LYT_looks_like_a_blast.jpg" in result.output
    assert not (out / "predictions").exists()


# ---------------------------------------------------------------------------- small classes over two splits
@pytest.fixture(scope="module", params=["drop", "train_only"])
def small_class_run(request, tmp_path_factory) -> tuple[str, Path]:
    """NGS with 3 images under a small-class policy: too few for 5 folds, enough for a holdout."""
    tmp = tmp_path_factory.mktemp(f"small-{request.param}")
    data = make_images(tmp / "data", n=10)
    for f in sorted((data / "NGS").iterdir())[3:]:
        f.unlink()
    protocol = write_protocol(tmp, data, {"cv5": "{kind: kfold, n_splits: 5}", "ho": "{kind: holdout, test_size: 0.3}"},
                              extra=f"small_classes: {request.param}\n")
    run(str(protocol), "-o", str(tmp / "run"))
    return request.param, tmp / "run"


def test_small_class_policy_applies_to_the_split_that_needs_it_only(small_class_run):
    policy, out = small_class_run
    excluded = json.loads((out / "splits.json").read_text())["excluded"]
    assert [(e["split"], e["label"], e["policy"]) for e in excluded] == [("cv5", "NGS", policy)]
    ngs_rows = [r for r in read_csv(out / "splits.csv") if r["label"] == "NGS"]
    assert len(ngs_rows) == 3
    # cv5: dropped = neither trained nor tested; train_only = always trained, never tested
    expected = {"drop": "-", "train_only": "train"}[policy]
    assert {r[f"cv5/fold-{k}"] for r in ngs_rows for k in range(5)} == {expected}
    trained = ["BLA", "LYT"] + (["NGS"] if policy == "train_only" else [])
    for k in range(5):
        info = json.loads((out / "predictions" / "colour" / "cv5" / f"fold-{k}.json").read_text())
        assert info["classes"] == trained
        assert all(r["truth"] != "NGS" for r in read_csv(out / "predictions" / "colour" / "cv5" / f"fold-{k}.csv"))
    # the holdout is not affected: it trains and tests NGS
    assert {r["ho/fold-0"] for r in ngs_rows} == {"train", "test"}
    ho = read_csv(out / "predictions" / "colour" / "ho" / "fold-0.csv")
    assert any(r["truth"] == "NGS" for r in ho) and "score_NGS" in ho[0]


def test_per_class_rows_and_averages_describe_exactly_the_classes_each_split_tested(small_class_run):
    _policy, out = small_class_run
    for split, n_folds in (("cv5", 5), ("ho", 1)):
        tested: dict[str, int] = defaultdict(int)
        for k in range(n_folds):
            for r in read_csv(out / "predictions" / "colour" / split / f"fold-{k}.csv"):
                tested[r["truth"]] += 1
        assert set(per_class_rows(out, split)) == set(tested), (split, sorted(per_class_rows(out, split)))
        support = {c: sum(v) for c, v in per_class_rows(out, split, "support").items()}
        assert support == dict(tested), split
        f1 = per_class_rows(out, split, "f1_strict")
        macro = [float(r["value"]) for r in read_csv(out / "metrics" / "long.csv")
                 if r["split"] == split and r["metric"] == "macro_f1_strict"]
        assert macro == pytest.approx([np.mean([f1[c][k] for c in f1]) for k in range(n_folds)]), split


# ---------------------------------------------------------------------------- the data changed
@pytest.fixture
def finished_then_changed(tmp_path: Path):
    """A finished run, then one more image in the data folder, then the same command again."""
    data = make_images(tmp_path / "data", n=6)
    protocol = write_protocol(tmp_path, data, {"cv3": "{kind: kfold, n_splits: 3}"}, extra="")
    out = tmp_path / "run"
    run(str(protocol), "-o", str(out))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    added = data / "BLA" / "BLA_late_arrival.jpg"
    Image.open(data / "LYT" / "LYT_00001.jpg").rotate(90).save(added, quality=95)
    refused = run(str(protocol), "-o", str(out), ok=False)
    return out, protocol, added, before, refused


def test_rerun_on_changed_data_is_refused_and_keeps_the_results(finished_then_changed):
    out, protocol, added, before, refused = finished_then_changed
    assert refused.exit_code == 2
    assert "data changed" in refused.output and "--output" in refused.output
    assert "Traceback" not in refused.output
    # nothing that describes the finished results was touched
    for rel in ("run.json", "splits.csv", "splits.json", "metrics/long.csv", "metrics/summary.csv"):
        assert (out / rel).read_bytes() == before[Path(rel)], rel
    for rel, blob in before.items():
        if rel.parts[0] == "predictions":
            assert (out / rel).read_bytes() == blob, rel
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    # with the data restored, the same command resumes every fold and runs none
    added.unlink()
    again = run(str(protocol), "-o", str(out))
    assert "0 fold(s) run" in again.output and "3 fold(s) resumed" in again.output


def test_refused_rerun_leaves_dataset_csv_as_it_was(finished_then_changed):
    out, _protocol, added, before, refused = finished_then_changed
    assert refused.exit_code == 2
    assert added.name not in (out / "dataset.csv").read_text()
    assert (out / "dataset.csv").read_bytes() == before[Path("dataset.csv")]
    assert (out / "skipped.csv").read_bytes() == before[Path("skipped.csv")]


def test_feature_alignment_maps_the_external_features_and_is_logged(tmp_path: Path, two_labs):
    """test_data.feature_alignment is applied only when asked (the log names it), and every
    external cell is still predicted (the map itself: tests/test_feature_alignment.py)."""
    train, test = two_labs
    pytest.importorskip("cytocompare_classical", reason="svm-rbf is in the cytocompare-classical plugin")
    methods = ("  feat:\n    features: {name: colour-stats}\n    classifier: {name: svm-rbf}\n"
               "    splits: [ext]\n")
    outputs = {}
    for align in ("none", "standardize"):
        extra = EXTERNAL_TEST_DATA.format(test=test, norm="none", label_map="BLA: BLA, LYT: LYT").replace(
            "colour_normalize: none", f"colour_normalize: none, feature_alignment: {align}")
        protocol = write_protocol(tmp_path, train, {"ext": "{kind: external}"}, methods=methods, extra=extra,
                                  name=f"{align}.yaml")
        result = run(str(protocol), "-o", str(tmp_path / align))
        outputs[align] = result.output
        assert ("aligned to the training set's" in result.output) == (align == "standardize")
    preds = {a: read_csv(tmp_path / a / "predictions" / "feat" / "ext" / "fold-0.csv") for a in outputs}
    assert [r["path"] for r in preds["none"]] == [r["path"] for r in preds["standardize"]]


# ---------------------------------------------------------------------------- two class schemes
def test_unmapped_external_cells_are_predicted_shown_and_never_scored(tmp_path: Path, two_labs):
    """Fig. 4 across two schemes: with ``unmapped: predict`` the NGS cells (no entry in the test
    set's label_map: a class "the model never learnt" for this lab's scheme) are predicted and
    listed under their own label; every metric is over the mapped cells only; the two-scheme
    matrix's CSV counts every prediction of every row."""
    train, test = two_labs
    extra = (f"test_data: {{path: {test}, label_from: prefix, label_map: {{BLA: BLA, LYT: LYT}}, unmapped: predict, "
             "image_size: [64, 64], colour_normalize: reinhard}\n")
    protocol = write_protocol(tmp_path, train, {"ext": "{kind: external}"}, extra=extra).read_text()
    protocol = protocol.replace("reports: []", "reports: [confusion-chart]")
    (tmp_path / "p.yaml").write_text(protocol)
    out = tmp_path / "run"
    result = run(str(tmp_path / "p.yaml"), "-o", str(out))
    assert "8 kept unmapped" in result.output

    tested = read_csv(out / "test_dataset.csv")
    assert len(tested) == 24 and read_csv(out / "test_skipped.csv") == []
    assert {(r["source_label"], r["label"]) for r in tested} == {("BLA", "BLA"), ("LYT", "LYT"), ("NGS", "")}
    preds = read_csv(out / "predictions" / "colour" / "ext" / "fold-0.csv")
    assert len(preds) == 24 and sum(r["truth"] == "" for r in preds) == 8

    mapped = [r for r in preds if r["truth"]]
    summary = {(r["split"], r["metric"]): float(r["mean"]) for r in read_csv(out / "metrics" / "summary.csv")
               if r["method"] == "colour" and not r["class"]}
    assert summary["ext", "accuracy_strict"] == pytest.approx(accuracy(mapped))
    assert {r["class"] for r in read_csv(out / "metrics" / "long.csv") if r["class"]} == {"BLA", "LYT"}

    by_label = {r["source_label"]: r for r in read_csv(out / "metrics" / "external_labels_colour_ext.csv")}
    assert set(by_label) == {"BLA", "LYT", "NGS"}
    ngs = by_label["NGS"]
    assert (ngs["mapped_to"], ngs["n_images"], ngs["right_of_called_strict"]) == ("", "8", "")
    calls = [r["prediction"] for r in preds if Path(r["path"]).name.startswith("NGS_")]
    assert ngs["most_frequent_call"] == max(set(calls), key=calls.count)
    bla = [r for r in mapped if r["truth"] == "BLA"]
    assert float(by_label["BLA"]["right_of_called_strict"]) == pytest.approx(accuracy(bla))  # no no-call class here
    assert (out / "charts" / "confusion_colour_ext.png").stat().st_size > 10_000


# ---------------------------------------------------------------------------- named test sets
def test_named_test_sets_are_each_predicted_by_one_fit(tmp_path: Path, two_labs):
    """Two labs' sets in one protocol: each external split tests on the set it names, with that
    set's own keys, files and matching; the model fitted for the first predicts the second."""
    train, test = two_labs
    extra = ("test_data:\n"
             f"  lab_a: {{path: {test}, label_from: prefix, label_map: {{BLA: BLA, LYT: LYT}}, image_size: [64, 64],"
             " colour_normalize: reinhard}\n"
             f"  lab_b: {{path: {test}, label_from: prefix, label_map: {{NGS: NGS}}, image_size: [64, 64]}}\n")
    splits = {"ext_a": "{kind: external, test_set: lab_a}", "ext_b": "{kind: external, test_set: lab_b}"}
    protocol = write_protocol(tmp_path, train, splits, extra=extra)
    protocol.write_text(protocol.read_text().replace("reports: []", "reports: [confusion-chart]"))
    out = tmp_path / "run"
    result = run(str(protocol), "-o", str(out))
    assert "the model fitted for split 'ext_a' on the same 30 images predicts this test set" in result.output

    a, b = read_csv(out / "test_lab_a_dataset.csv"), read_csv(out / "test_lab_b_dataset.csv")
    assert ({r["label"] for r in a}, len(a), {r["label"] for r in b}, len(b)) == ({"BLA", "LYT"}, 16, {"NGS"}, 8)
    assert json.loads((out / "test_lab_a_matching.json").read_text())["colour"] is not None
    pred_a = read_csv(out / "predictions" / "colour" / "ext_a" / "fold-0.csv")
    pred_b = read_csv(out / "predictions" / "colour" / "ext_b" / "fold-0.csv")
    assert [r["path"] for r in pred_a] == [r["path"] for r in a] and [r["path"] for r in pred_b] == [r["path"] for r in b]
    info_a = json.loads((out / "predictions" / "colour" / "ext_a" / "fold-0.json").read_text())
    info_b = json.loads((out / "predictions" / "colour" / "ext_b" / "fold-0.json").read_text())
    assert "fitted_for" not in info_a and info_b["fitted_for"] == "ext_a" and info_b["fit_seconds"] == 0
    # each split's two-scheme table reads its own set's labels
    for split, labels in (("ext_a", {"BLA", "LYT"}), ("ext_b", {"NGS"})):
        table = read_csv(out / "metrics" / f"external_labels_colour_{split}.csv")
        assert {r["source_label"] for r in table} == labels
    plan = json.loads((out / "splits.json").read_text())
    assert {n: s["n_images"] for n, s in plan["external_sets"].items()} == {"lab_a": 16, "lab_b": 8}
    assert json.loads((out / "run.json").read_text())["test_data"] == {"lab_a": str(test), "lab_b": str(test)}
    # resumed: nothing is fitted again, and the plan (with both sets' hashes) is the same
    again = run(str(protocol), "-o", str(out))
    assert "2 fold(s) resumed" in again.output


@pytest.mark.parametrize(("splits", "message"), [
    ({"ext": "{kind: external}"}, "test_data names several sets (lab_a, lab_b): say which one"),
    ({"ext": "{kind: external, test_set: lab_c}"}, "unknown test set 'lab_c'; test_data names lab_a, lab_b"),
    ({"ho": "{kind: holdout, test_set: lab_a}"}, "test_set"),
])
def test_named_test_set_references_are_checked(tmp_path: Path, two_labs, splits, message):
    train, test = two_labs
    extra = f"test_data:\n  lab_a: {{path: {test}}}\n  lab_b: {{path: {test}}}\n"
    result = run("-o", str(tmp_path / "run"), str(write_protocol(tmp_path, train, splits, extra=extra)), ok=False)
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "run" / "run.json").exists()


def test_test_data_option_names_the_set_it_replaces(tmp_path: Path, two_labs):
    train, test = two_labs
    extra = (f"test_data:\n  lab_a: {{path: {test}, label_from: prefix, image_size: [64, 64]}}\n"
             "  lab_b: {path: /nowhere, label_from: prefix, image_size: [64, 64]}\n")
    splits = {"ext_a": "{kind: external, test_set: lab_a}", "ext_b": "{kind: external, test_set: lab_b}"}
    protocol = str(write_protocol(tmp_path, train, splits, extra=extra))
    refused = run(protocol, "-o", str(tmp_path / "r0"), "--test-data", str(test), ok=False)
    assert "give --test-data NAME=PATH" in refused.output and "lab_a, lab_b" in refused.output
    out = tmp_path / "r1"
    run(protocol, "-o", str(out), "--test-data", f"lab_b={test}")
    assert json.loads((out / "run.json").read_text())["test_data"] == {"lab_a": str(test), "lab_b": str(test)}
    assert len(read_csv(out / "test_lab_b_dataset.csv")) == 24
