"""``cytocompare data check``: a folder against a class scheme's classes and published counts.

Synthetic trees in the paper's layout (CLASS/0001-1000/CLASS_00001.jpg) against a small scheme
file whose ``n_paper`` counts they match, then one fault at a time: a missing class, a wrong
size, an unreadable file, a byte duplicate, a near duplicate, a folder the scheme lacks.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from cytocompare.cli import cli
from cytocompare.classes import load_scheme
from cytocompare.data_check import FEWER, MISSING, MORE, OK, UNKNOWN, check_data

SIZE = (24, 24)
COUNTS = {"AAA": 3, "BBB": 2, "CCC": 2}


def _jpeg_bytes(seed: int, size: tuple[int, int] = SIZE) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture()
def scheme(tmp_path: Path) -> Path:
    path = tmp_path / "scheme.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny",
        "classes": [{"code": c, "name": f"class {c}", "lineage": "x", "n_paper": n} for c, n in COUNTS.items()],
    }))
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    seed = 0
    for code, n in COUNTS.items():
        folder = root / code / "0001-1000"
        folder.mkdir(parents=True)
        for i in range(1, n + 1):
            seed += 1
            (folder / f"{code}_{i:05d}.jpg").write_bytes(_jpeg_bytes(seed))
    return root


def _first(root: Path, code: str) -> Path:
    return sorted((root / code).rglob("*.jpg"))[0]


def test_a_matching_tree_matches(tree: Path, scheme: Path):
    report = check_data(tree, scheme=str(scheme), image_size=SIZE, near_duplicate_threshold=16)
    assert report.matches, report.problems
    assert [(c.code, c.found, c.status) for c in report.classes] == [(c, n, OK) for c, n in COUNTS.items()]
    assert report.found == report.expected == sum(COUNTS.values())
    assert report.layout == "paper"
    assert report.bad == [] and report.duplicate_groups == [] and report.near_duplicate_groups == []


def test_a_missing_class_folder_is_named(tree: Path, scheme: Path):
    for f in (tree / "CCC").rglob("*.jpg"):
        f.unlink()
    (tree / "CCC" / "0001-1000").rmdir()
    (tree / "CCC").rmdir()
    report = check_data(tree, scheme=str(scheme))
    assert not report.matches
    status = {c.code: c.status for c in report.classes}
    assert status == {"AAA": OK, "BBB": OK, "CCC": MISSING}
    assert report.problems == ["1 class(es) missing: CCC"]


def test_counts_other_than_published_are_fewer_or_more(tree: Path, scheme: Path):
    _first(tree, "AAA").unlink()
    (tree / "BBB" / "0001-1000" / "BBB_00099.jpg").write_bytes(_jpeg_bytes(99))
    report = check_data(tree, scheme=str(scheme))
    rows = {c.code: (c.found, c.expected, c.status) for c in report.classes}
    assert rows["AAA"] == (2, 3, FEWER) and rows["BBB"] == (3, 2, MORE) and rows["CCC"] == (2, 2, OK)
    assert not report.matches


def test_a_wrongly_sized_and_an_unreadable_file_are_bad(tree: Path, scheme: Path):
    wrong = _first(tree, "AAA")
    wrong.write_bytes(_jpeg_bytes(50, size=(20, 24)))
    broken = _first(tree, "BBB")
    broken.write_bytes(_jpeg_bytes(51)[:100])  # truncated
    report = check_data(tree, scheme=str(scheme), image_size=SIZE)
    causes = {Path(b.path).name: b.cause for b in report.bad}
    assert set(causes) == {wrong.name, broken.name}
    assert "size 24x20, expected 24x24" in causes[wrong.name]
    assert not report.matches and "2 bad file(s)" in report.problems
    # without an expected size only the unreadable one is bad
    assert [Path(b.path).name for b in check_data(tree, scheme=str(scheme)).bad] == [broken.name]


def test_byte_and_near_duplicates_are_reported_but_do_not_fail(tree: Path, scheme: Path):
    original = _first(tree, "AAA")
    copy = tree / "AAA" / "0001-1000" / "AAA_00003.jpg"
    copy.write_bytes(original.read_bytes())  # byte duplicate (replaces the third image)
    near = tree / "BBB" / "0001-1000" / "BBB_00002.jpg"
    Image.open(_first(tree, "BBB")).save(near, format="JPEG", quality=60)  # re-encoded copy
    report = check_data(tree, scheme=str(scheme), near_duplicate_threshold=16)
    assert report.duplicate_groups == [[str(original), str(copy)]]
    assert report.near_duplicate_groups == [[str(_first(tree, "BBB")), str(near)]]
    assert report.matches  # counts are right; a run keeps duplicate groups together
    # not looked for unless asked
    assert check_data(tree, scheme=str(scheme)).near_duplicate_groups is None


def test_a_folder_the_scheme_lacks_is_a_mismatch(tree: Path, scheme: Path):
    (tree / "ZZZ").mkdir()
    (tree / "ZZZ" / "ZZZ_00001.jpg").write_bytes(_jpeg_bytes(77))
    report = check_data(tree, scheme=str(scheme))
    assert [(c.code, c.found, c.status) for c in report.classes if c.code == "ZZZ"] == [("ZZZ", 1, UNKNOWN)]
    assert report.problems == ["1 class(es) not in scheme: ZZZ"]


def test_the_published_total_is_the_schemes():
    assert sum(c.n_paper for c in load_scheme("matek2021").classes) == 171_374


def test_command_prints_the_table_and_exits_by_the_verdict(tree: Path, scheme: Path):
    runner = CliRunner()
    ok = runner.invoke(cli, ["data", "check", str(tree), "--scheme", str(scheme), "--image-size", "24x24",
                             "--near-duplicates"])
    assert ok.exit_code == 0, ok.output
    assert "MATCHES the tiny scheme" in ok.output and "expected size 24x24" in ok.output
    assert "no near-identical files" in ok.output
    _first(tree, "CCC").write_bytes(_jpeg_bytes(60, size=(32, 32)))
    bad = runner.invoke(cli, ["data", "check", str(tree), "--scheme", str(scheme), "--image-size", "24x24"])
    assert bad.exit_code == 1
    assert "1 bad file(s)" in bad.output and "size 32x32, expected 24x24" in bad.output
    assert "DOES NOT MATCH" in bad.output and "1 class(es) fewer: CCC" in bad.output
    # every file bad: no data set at all, an error (exit 2) naming the first file and its cause
    none = runner.invoke(cli, ["data", "check", str(tree), "--scheme", str(scheme), "--image-size", "8x8"])
    assert none.exit_code == 2 and "every image file is bad" in none.output and "expected 8x8" in none.output
    assert runner.invoke(cli, ["data", "check", str(tree), "--image-size", "big"]).exit_code == 2


def test_command_takes_size_and_scheme_from_a_protocol(tree: Path, scheme: Path, tmp_path: Path):
    protocol = tmp_path / "p.yaml"
    protocol.write_text(yaml.safe_dump({
        "version": 1, "name": "p", "class_scheme": str(scheme), "data": {"path": str(tree), "image_size": [20, 20]},
        "splits": {"h": {"kind": "holdout", "test_size": 0.3}},
        "methods": {"m": {"classifier": {"name": "colour-logreg"}, "splits": ["h"]}}}))
    _first(tree, "AAA").write_bytes(_jpeg_bytes(61, size=(20, 20)))
    result = CliRunner().invoke(cli, ["data", "check", str(tree), "--protocol", str(protocol)])
    assert result.exit_code == 1, result.output
    assert "expected size 20x20" in result.output and "6 bad file(s)" in result.output
