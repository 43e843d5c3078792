"""The deep arm's explanation artifacts (Figs. 5 and 6): which cells they show, and the files
``write_artifacts`` writes from a tiny model trained on bundled real cells (CPU, seconds)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("captum")
pytest.importorskip("pytorch_grad_cam")

from cytocompare.datasets import bundled_sample_path  # noqa: E402
from cytocompare.images import ImageSet  # noqa: E402
from cytocompare_deep import explain  # noqa: E402
from cytocompare_deep.classifier import SequentialCNNClassifier  # noqa: E402

# hand-worked example: 3 classes, 10 cells
T = ["A", "A", "A", "A", "B", "B", "B", "C", "C", "C"]
P = ["A", "A", "B", "B", "B", "A", "C", "B", "B", "A"]
Q = [0.6, 0.9, 0.7, 0.8, 0.5, 0.95, 0.4, 0.55, 0.65, 0.3]


def test_correct_cells_most_confident_correct_one_per_class() -> None:
    assert explain.correct_cells(T, P, Q) == {"A": 1, "B": 4}  # C: no correct cell -> absent
    assert list(explain.correct_cells(T, P, Q, class_order=["B", "A", "C"])) == ["B", "A"]
    # ties: the first row
    assert explain.correct_cells(["A", "A"], ["A", "A"], [0.5, 0.5]) == {"A": 0}


def test_top_confusions_hand_worked() -> None:
    # errors: A->B x2, B->A, B->C, C->B x2, C->A
    assert explain.top_confusions(T, P, 6) == [("A", "B", 2), ("C", "B", 2), ("B", "A", 1), ("B", "C", 1),
                                               ("C", "A", 1)]
    assert explain.top_confusions(T, P, 2) == [("A", "B", 2), ("C", "B", 2)]
    assert explain.top_confusions(["A", "B"], ["A", "B"]) == []


def test_misclassified_cells_most_confident_first() -> None:
    pairs = explain.top_confusions(T, P, 3)
    assert explain.misclassified_cells(T, P, Q, pairs, per_pair=4) == [[3, 2], [8, 7], [5]]
    assert explain.misclassified_cells(T, P, Q, pairs, per_pair=1) == [[3], [8], [5]]


def test_gallery_and_index_files(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in T]
    pairs = explain.top_confusions(T, P, 6)
    cells = explain.misclassified_cells(T, P, Q, pairs, 4)
    out = explain.write_misclassified_gallery(images, pairs, cells, Q, tmp_path / "g.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[1] > 5 * 200  # 5 rows
    empty = explain.write_misclassified_gallery(images, [], [], Q, tmp_path / "none.png")
    assert empty.stat().st_size > 0
    paths = [f"/x/{i}.jpg" for i in range(len(T))]
    j, c = explain.write_index(tmp_path, paths, T, P, Q, explain.correct_cells(T, P, Q), pairs, cells,
                               {"correct": "e.png", "misclassified": "g.png"})
    doc = json.loads(j.read_text())
    assert doc["correct"][0] == {"class": "A", "path": "/x/1.jpg", "true": "A", "predicted": "A", "probability": 0.9}
    assert doc["classes_without_correct_cell"] == ["C"]
    assert [(m["true"], m["predicted"], m["count"]) for m in doc["misclassified"]] == pairs
    assert [e["path"] for e in doc["misclassified"][0]["cells"]] == ["/x/3.jpg", "/x/2.jpg"]
    rows = list(csv.DictReader(c.open()))
    assert len(rows) == 2 + sum(map(len, cells))
    assert rows[2] == {"figure": "g.png", "row": "0", "column": "0", "path": "/x/3.jpg", "true": "A",
                       "predicted": "B", "probability": "0.8", "pair_count": "2"}


# ------------------------------------------------------------------------------------------------
# end to end: a tiny model on bundled real cells
# ------------------------------------------------------------------------------------------------
CLASSES = ["BLA", "EOS", "LYT", "MON", "NGS", "NIF", "PMO"]


def _cells(start: int, stop: int) -> ImageSet:
    root = bundled_sample_path("matek-bm-sample")
    paths = [(p, c) for c in CLASSES for p in sorted((root / c).glob("*.jpg"))[start:stop]]
    return ImageSet([p for p, _ in paths], [c for _, c in paths])


class _FakeUMAP:
    """Stands in for umap.UMAP (numba's JIT costs ~30-60 s on first use): a 2-D projection."""

    def __init__(self, **kwargs: object) -> None:
        pass

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        return x[:, :2] - x[:, :2].mean(axis=0)


def _check_artifacts(out: Path, clf: SequentialCNNClassifier, test: ImageSet, paths: list[Path]) -> None:
    names = {p.name for p in paths}
    assert {"explanations_correct.png", "misclassified_gallery.png", "umap.png", "umap.csv",
            "explanations_index.json", "explanations_index.csv"} <= names
    for p in paths:
        assert p.exists() and p.stat().st_size > 0 and out in p.parents, p
    doc = json.loads((out / "explanations_index.json").read_text())
    pred = clf.predict(test)
    truth = test.labels.astype(str)
    row_of = {str(p): i for i, p in enumerate(test.paths)}
    # the "correct" cells really were classified correctly, one per class that has any
    has_correct = sorted({t for t, p in zip(truth, pred) if t == p})
    assert [e["class"] for e in doc["correct"]] == has_correct
    for e in doc["correct"]:
        i = row_of[e["path"]]
        assert truth[i] == pred[i] == e["true"] == e["predicted"] == e["class"]
    assert sorted(doc["classes_without_correct_cell"]) == sorted(set(truth) - set(has_correct))
    # the gallery's pairs are the most frequent confusions
    errors = Counter((t, p) for t, p in zip(truth, pred) if t != p)
    shown = [((m["true"], m["predicted"]), m["count"]) for m in doc["misclassified"]]
    assert len(shown) == min(6, len(errors))
    counts = sorted(errors.values(), reverse=True)
    assert [n for _, n in shown] == counts[: len(shown)]
    for pair, n in shown:
        assert errors[pair] == n
    for m in doc["misclassified"]:
        assert 1 <= len(m["cells"]) <= min(4, m["count"])
        for e in m["cells"]:
            i = row_of[e["path"]]
            assert (truth[i], pred[i]) == (m["true"], m["predicted"])


@pytest.fixture(scope="module")
def trained() -> tuple[SequentialCNNClassifier, ImageSet]:
    train = _cells(0, 16)
    clf = SequentialCNNClassifier(input_size=32, device="cpu", augment=False, progress=False, num_workers=0,
                                  epochs=3, samples_per_class=32, batch_size=16, lr=0.05, random_state=0)
    return clf.fit(train, train.labels), _cells(16, 28)


def test_write_artifacts_on_real_cells(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    umap = pytest.importorskip("umap")
    monkeypatch.setattr(umap, "UMAP", _FakeUMAP)
    clf, test = trained
    out = tmp_path / "artifacts" / "sequential-cnn" / "holdout"
    paths = clf.write_artifacts(out, test, test.labels)
    _check_artifacts(out, clf, test, paths)
    pred = clf.predict(test)
    assert (pred != test.labels.astype(str)).any(), "a tiny model must make some errors for the gallery"


@pytest.mark.slow  # real UMAP: numba's compilation
def test_write_artifacts_on_real_cells_real_umap(trained, tmp_path: Path) -> None:
    pytest.importorskip("umap")
    clf, test = trained
    out = tmp_path / "art"
    _check_artifacts(out, clf, test, clf.write_artifacts(out, test, test.labels))


def test_correct_cells_title_names_the_missing_classes() -> None:
    from cytocompare_deep.classifier import _correct_cells_title

    y = np.array(["A", "B", "C"])
    assert _correct_cells_title(y, {"A": 0, "B": 1, "C": 2}).count("\n") == 0
    assert _correct_cells_title(y, {"B": 1}).endswith("no correctly classified cell: A, C")
