"""index.html (cytocompare.reports.html): one self-contained page per run, rendered with jinja2.

A synthetic run directory (tests/test_reports.py) plus the files other reporters and the runner
may add (per-class paired statistics, a comparison chart, explanations, test_skipped.csv, ...);
checked by parsing the page and, where Debian's chromium is installed, in headless Chromium.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

from cytocompare.evaluation import evaluate_and_report
from cytocompare.reports.charts import draw_paired_per_class
from cytocompare.reports.html import HtmlReporter, _difference_sentence
from cytocompare.reports.paired import ALPHA
from cytocompare.rundir import RunDir
from test_reports import LABELS, NAMES, make_synthetic_run

PER_CLASS = [  # method_a, method_b, class, n, recall_a, recall_b, diff, ci_low, ci_high, p, p_holm
    ["deep", "classical", "BLA", 60, 0.88, 0.76, 0.12, 0.08, 0.16, 0.001, 0.007],
    ["deep", "classical", "NGS", 5, 0.8, 1.0, -0.2, -0.6, 0.2, 0.5, 1.0],
]


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.ids: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for k, v in attrs:
            if k in ("href", "src") and v is not None:
                self.refs.append((tag, v))
            if k == "id" and v:
                self.ids.add(v)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Links:
    p = _Links()
    p.feed(html)
    return p


def _unresolved(root: Path) -> list[str]:
    """Every href/src of index.html that is not a file inside ``root`` (or an anchor on the page)."""
    page = _parse((root / "index.html").read_text(encoding="utf-8"))
    bad = []
    for _, ref in page.refs:
        parts = urlsplit(ref)
        if not parts.scheme and not parts.path and parts.fragment:
            if parts.fragment not in page.ids:
                bad.append(ref)
            continue
        if parts.scheme or ref.startswith("/") or ".." in Path(parts.path).parts:
            bad.append(ref)  # absolute: would break in a copied folder
            continue
        target = (root / unquote(parts.path)).resolve()
        if not target.is_file() or root.resolve() not in target.parents:
            bad.append(ref)
    return bad


def _extras(run: RunDir) -> None:
    """What the runner and the other reporters may add next to the synthetic run's files."""
    run.write_csv("metrics/paired_per_class_cv.csv",
                  ["method_a", "method_b", "class", "n", "recall_a", "recall_b", "diff", "ci_low", "ci_high", "p",
                   "p_holm"], PER_CLASS)
    draw_paired_per_class(run, "cv", alpha=ALPHA)  # the chart the paired-stats reporter draws from that CSV
    for name in ("test_skipped.csv", "skipped.csv", "near_duplicates.csv"):
        run.write_csv(name, ["path", "reason"], [["x/bad file.jpg", "unreadable"]])
    run.write_json("splits.json", {"cv": {"kind": "kfold"}})
    run.write_json("plugins.json", {"cytocompare": {"version": "0.1.0"}})
    shutil.copy(run.path / "charts" / "recall_cv.png", run.path / "charts" / "compare_cv_external.png")
    art = run.artifacts_dir("deep", "cv")
    art.mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 30, 30)).save(art / "smoothgrad_BLA.png")
    (art / "umap.csv").write_text("x,y\n0,1\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    run = make_synthetic_run(tmp_path_factory.mktemp("html") / "run")
    evaluate_and_report(run)
    _extras(run)
    HtmlReporter().report(run.path)
    return run


@pytest.fixture(scope="module")
def html(run: RunDir) -> str:
    return (run.path / "index.html").read_text(encoding="utf-8")


def _csv(run: RunDir, rel: str) -> list[dict[str, str]]:
    with open(run.path / rel, newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ the words
def test_difference_sentence_hand_worked() -> None:
    assert _difference_sentence("ResNeXt-50", "features", 0.12, 0.08, 0.16, "BLA recall") == (
        "ResNeXt-50 beats features on BLA recall by 0.12 [0.08, 0.16] (95 % CI; the interval excludes 0).")
    # diff = a - b < 0: the better method is named first and the interval is turned round
    s = _difference_sentence("features", "ResNeXt-50", -0.12, -0.16, -0.08, "BLA recall")
    assert s.startswith("ResNeXt-50 beats features on BLA recall by 0.12 [0.08, 0.16]")
    s = _difference_sentence("a", "b", 0.05, -0.04, 0.13, "balanced accuracy (tolerant)")
    assert "beats" not in s and "by 0.05 [-0.04, 0.13]" in s and "includes 0" in s
    assert "no difference could be computed" in _difference_sentence("a", "b", float("nan"), 0, 0, "x")


def test_paired_statistics_in_words(run: RunDir, html: str) -> None:
    for r in _csv(run, "metrics/paired_cv.csv"):  # classical - deep < 0: deep named first
        d, lo, hi = -float(r["diff"]), -float(r["ci_high"]), -float(r["ci_low"])
        assert d > 0
        want = f"deep scores higher than classical on balanced accuracy ({r['criterion']}) by {d:.2f} [{lo:.2f}, {hi:.2f}]"
        assert want in html
        assert f"{r['mcnemar_b']} only classical, {r['mcnemar_c']} only deep" in html


def test_per_class_paired_rendered_when_present(run: RunDir, html: str, tmp_path: Path) -> None:
    # the words of paired_<split>.md (describe_per_class): "beats" where the Holm-corrected p says so
    assert "deep beats classical on BLA (blast) by 0.12 [0.08, 0.16], Holm p = 0.007 (n = 60)" in html
    assert ("classical is ahead of deep on NGS (segmented neutrophil) by 0.20 [-0.20, 0.60], not a clear "
            "difference (Holm p = 1.000, n = 5)") in html
    assert "<td>0.007</td>" in html  # p_holm of BLA
    # absent file: no section, no error
    other = make_synthetic_run(tmp_path / "run", n_folds=2)
    HtmlReporter().report(other.path)
    assert "recall differences" not in (other.path / "index.html").read_text()
    assert "no paired comparison" not in html  # two methods: compared


def test_one_method_says_there_is_no_comparison(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path / "run", n_folds=2)
    for f in (run.path / "predictions" / "deep").rglob("*"):
        if f.is_file():
            f.unlink()
    info = run.read_json("run.json")
    del info["methods"]["deep"]
    run.write_json("run.json", info)
    HtmlReporter().report(run.path)
    html = (run.path / "index.html").read_text()
    assert html.count("One method on this split: no paired comparison.") == 2
    assert _unresolved(run.path) == []


def test_per_class_chart_beside_the_sentences(run: RunDir, html: str) -> None:
    start = html.index("Per class: recall differences")
    end = html.index("</table>", start)
    section = html[start:end]
    chart = "charts/paired_per_class_cv.png"
    assert (run.path / chart).is_file()
    srcs = [v for tag, v in _parse(html).refs if tag == "img"]
    assert srcs.count(chart) == 1  # shown once: here, not again among the split's other charts
    assert f'<img src="{chart}"' in section
    assert section.index("deep beats classical on BLA") < section.index("<table")  # words and chart, then table
    assert section.index('<div class="beside">') < section.index("deep beats") < section.index(chart)


# ------------------------------------------------------------------ the tables
def _tables(html: str) -> list[list[list[str]]]:
    """Every <table> as rows of cell texts."""
    class T(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tables: list[list[list[str]]] = []
            self.cell: list[str] | None = None

        def handle_starttag(self, tag, attrs):  # noqa: ANN001
            if tag == "table":
                self.tables.append([])
            elif tag == "tr":
                self.tables[-1].append([])
            elif tag in ("td", "th"):
                self.cell = []

        def handle_endtag(self, tag):  # noqa: ANN001
            if tag in ("td", "th") and self.cell is not None:
                self.tables[-1][-1].append("".join(self.cell).strip())
                self.cell = None

        def handle_data(self, data):  # noqa: ANN001
            if self.cell is not None:
                self.cell.append(data)

    t = T()
    t.feed(html)
    return t.tables


def test_table1_as_html_with_the_csv_values(run: RunDir, html: str) -> None:
    tables = _tables(html)
    table1 = [t for t in tables if t and t[0][:3] == ["Class", "Name", "Images"] and "Recall (strict)" in t[0]]
    assert len(table1) == 4  # 2 methods x (cv, external)
    cv_classical = table1[0]
    header = cv_classical[0]
    assert [r[0] for r in cv_classical[1:]] == LABELS  # lineage order, codes with names
    assert [r[1] for r in cv_classical[1:]] == [NAMES[c] for c in LABELS]
    # the values: mean ± sd over folds of summary.csv (independent of table1_cv.csv)
    summary = {(r["method"], r["split"], r["metric"], r["class"]): r for r in _csv(run, "metrics/summary.csv")}
    col = header.index("Recall (strict)")
    for row in cv_classical[1:]:
        s = summary[("classical", "cv", "recall_strict", row[0])]
        assert row[col] == f"{float(s['mean']):.2f} ± {float(s['sd']):.2f}"
    assert cv_classical[1][header.index("Images")] == "60"
    assert "<table" in html and "table1_cv.md" in html  # the Markdown is linked, not the only place


def test_table1_missing_values_show_a_dash(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.write_csv("metrics/table1_s.csv", ["method", "class", "name", "n_images", "recall_strict_mean",
                                           "recall_strict_sd", "paper_recall"],
                  [["m", "BLA", "blast", 0, "", "", 0.5], ["m", "LYT", "lymphocyte", 3, 0.25, 0.125, ""]])
    (t,) = HtmlReporter()._table1(run, "s", {})
    assert t["header"] == ["Images", "Recall (strict)", "Paper recall"]
    assert t["rows"][0]["cells"] == ["0", "–", "0.50"]
    assert t["rows"][1]["cells"] == ["3", "0.25 ± 0.12", "–"]


def test_summary_external_and_chance_level(run: RunDir, html: str) -> None:
    summary = {(r["method"], r["split"], r["metric"], r["class"]): r for r in _csv(run, "metrics/summary.csv")}
    tables = _tables(html)
    ext = [t for t in tables if t and t[0][:2] == ["Method", "Coverage (called)"]]
    assert len(ext) == 1
    for row in ext[0][1:]:
        assert row[1] == f"{float(summary[(row[0], 'external', 'coverage', '')]['mean']):.3f}"
    assert f"1/7 = {1 / 7:.3f} (chance level)" in html  # 7 training classes
    bal = [t for t in tables if t and t[0][:2] == ["Method", "Balanced acc. (strict)"]]
    assert bal[0][1][1] == (f"{float(summary[('classical', 'cv', 'balanced_accuracy_strict', '')]['mean']):.3f} ± "
                            f"{float(summary[('classical', 'cv', 'balanced_accuracy_strict', '')]['sd']):.3f}")
    assert "BLA (blast)" in html and "OTH (other cell)" in html  # class names next to codes


def test_splits_in_the_protocols_order(tmp_path: Path) -> None:
    """run.json's keys are sorted (cv, external); protocol.yaml keeps the protocol's order."""
    import yaml

    run = make_synthetic_run(tmp_path / "run", n_folds=2)
    HtmlReporter().report(run.path)
    html = (run.path / "index.html").read_text()
    assert html.index('id="split-cv"') < html.index('id="split-external"')  # no protocol.yaml: run.json order
    (run.path / "protocol.yaml").write_text(yaml.safe_dump(
        {"name": "synthetic", "splits": {"external": {"kind": "external"}, "cv": {"kind": "kfold"}}}, sort_keys=False))
    HtmlReporter().report(run.path)
    html = (run.path / "index.html").read_text()
    assert html.index('id="split-external"') < html.index('id="split-cv"')
    assert html.index('href="#split-external"') < html.index('href="#split-cv"')


# ------------------------------------------------------------------ links, files, modes
def test_every_link_and_image_resolves_also_in_a_copy(run: RunDir, html: str, tmp_path: Path) -> None:
    assert _unresolved(run.path) == []
    copy = tmp_path / "copied run"
    shutil.copytree(run.path, copy)
    assert _unresolved(copy) == []
    srcs = [v for tag, v in _parse(html).refs if tag == "img"]
    assert "charts/recall_cv.png" in srcs and "charts/compare_cv_external.png" in srcs
    assert "artifacts/deep/cv/smoothgrad_BLA.png" in srcs
    assert {"charts/confusion_deep_external.png", "charts/recall_external.png"} <= set(srcs)
    assert "<script" not in html


def test_files_index_lists_every_file(run: RunDir, html: str) -> None:
    hrefs = {v for tag, v in _parse(html).refs if tag == "a"}
    for name in ("test_skipped.csv", "splits.json", "plugins.json", "near_duplicates.csv", "run.json",
                 "metrics/paired_per_class_cv.csv", "artifacts/deep/cv/umap.csv"):
        assert name in hrefs, name
    every = {p.relative_to(run.path).as_posix() for p in run.path.rglob("*") if p.is_file()} - {"index.html"}
    assert every <= {unquote(h) for h in hrefs}


def test_jinja2_template_and_runs_last() -> None:
    import cytocompare.reports.html as mod

    assert HtmlReporter.runs_last is True
    assert (Path(mod.__file__).parent / "templates" / "index.html.j2").is_file()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_page_mode_follows_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    run = make_synthetic_run(tmp_path / "run", n_folds=2)
    old = os.umask(umask)
    try:
        HtmlReporter().report(run.path)
    finally:
        os.umask(old)
    assert (run.path / "index.html").stat().st_mode & 0o777 == mode


# ------------------------------------------------------------------ a real browser
def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_headless_chromium_loads_the_page(run: RunDir, tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); the page is checked by parsing only")
    shot = tmp_path / "index.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
           "--v=0", f"--screenshot={shot}", "--window-size=1400,3000", (run.path / "index.html").as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # no console messages at all (the page has no script)
    assert "ERR_FILE_NOT_FOUND" not in proc.stderr
    assert _unresolved(run.path) == []
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (1400, 3000)
        assert len(np.unique(np.asarray(im.convert("L")))) > 10  # something was drawn
    out = os.environ.get("CYTOCOMPARE_SCREENSHOT_DIR")
    if out:  # keep the screenshot for a person to look at
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(out) / "index.png")
