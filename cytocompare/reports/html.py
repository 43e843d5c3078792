"""``index.html``: one plain page linking every table and chart of a run (no JavaScript)."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import ClassVar

from cytocompare.base import BaseComponent
from cytocompare.feature_failures import FEATURE_FAILURES_FILE, failure_counts, failure_note
from cytocompare.reports import MetricsView, ensure_metrics, fmt_stat, tolerance_note

_COLUMNS = (
    ("balanced_accuracy_strict", "Balanced acc. (strict)"),
    ("balanced_accuracy_tolerant", "Balanced acc. (tolerant)"),
    ("macro_f1_strict", "Macro-F1 (strict)"),
    ("macro_f1_tolerant", "Macro-F1 (tolerant)"),
)

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _link(path: Path, root: Path) -> str:
    rel = escape(_rel(path, root))
    return f'<a href="{rel}">{rel}</a>'


class HtmlReporter(BaseComponent):
    """``index.html``: run info, a summary table per split, every chart, links to tables and CSVs."""

    #: it links what the other reporters wrote, so it runs after them (cytocompare.evaluation reads this)
    runs_last: ClassVar[bool] = True

    def __init__(self, title: str = "") -> None:
        self.title = title

    def report(self, run_dir: Path) -> list[Path]:
        from cytocompare.evaluation import display_order, split_labels

        run = ensure_metrics(run_dir)
        view = MetricsView(run)
        info = run.info
        root = run.path
        title = self.title or f"cytocompare run: {info.get('protocol_name', root.name)}"
        out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
               f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
               f"<h1>{escape(title)}</h1>", "<h2>Run</h2>", "<table>"]
        for key in ("status", "protocol_name", "protocol_hash", "started", "finished"):
            if key in info:
                out.append(f"<tr><th>{escape(key)}</th><td>{escape(str(info[key]))}</td></tr>")
        out.append(f"<tr><th>methods</th><td>{escape(', '.join(run.methods()))}</td></tr>")
        tested = {split: split_labels(run, split) for split in view.splits()}
        every = display_order(run, set(run.labels()).union(*tested.values()))
        out.append(f"<tr><th>classes</th><td>{escape(', '.join(every))}</td></tr>")
        out.append(f"<tr><th>tolerated pairs</th><td>{escape(tolerance_note(run))}</td></tr>")
        note = failure_note(run)
        if note:  # cells whose features failed (issue 8.3), linked to their list
            text = escape(note).replace(FEATURE_FAILURES_FILE, f'<a href="{FEATURE_FAILURES_FILE}">{FEATURE_FAILURES_FILE}</a>')
            n = sum(failure_counts(run).values())
            out.append(f"<tr><th>feature failures</th><td>{n} listed. {text}</td></tr>")
        for k, v in sorted(info.get("versions", {}).items()):
            out.append(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>")
        out.append("</table>")

        for split in view.splits():
            desc = run.splits().get(split, {})
            out.append(f"<h2>Split <code>{escape(split)}</code> ({escape(str(desc.get('kind', '')))}, "
                       f"{escape(str(desc.get('n_folds', '')))} folds)</h2>")
            out.append(f"<p>Classes tested ({len(tested[split])}): {escape(', '.join(tested[split]))}; "
                       "the per-class rows and the class averages describe exactly these.</p>")
            out.append("<table><tr><th>Method</th>" + "".join(f"<th>{escape(t)}</th>" for _, t in _COLUMNS) + "</tr>")
            for m in view.methods(split):
                cells = "".join(f"<td>{escape(fmt_stat(view.get(m, split, k), 3))}</td>" for k, _ in _COLUMNS)
                out.append(f"<tr><td>{escape(m)}</td>{cells}</tr>")
            out.append("</table>")
            links = [p for p in (root / f"table1_{split}.md", root / f"paired_{split}.md",
                                 root / "metrics" / f"table1_{split}.csv", root / "metrics" / f"paired_{split}.csv")
                     if p.is_file()]
            if links:
                out.append("<p>" + " · ".join(_link(p, root) for p in links) + "</p>")
            charts = sorted((root / "charts").glob(f"recall_{split}.png")) + sorted(
                p for p in (root / "charts").glob("confusion_*.png") if p.stem.endswith(f"_{split}"))
            for p in charts:
                rel = escape(_rel(p, root))
                out.append(f'<figure><a href="{rel}"><img src="{rel}" alt="{rel}"></a>'
                           f"<figcaption>{rel}</figcaption></figure>")

        out.append("<h2>Files</h2><ul>")
        files = [root / n for n in ("run.json", "protocol.yaml", "dataset.csv", "splits.csv", "skipped.csv",
                                    FEATURE_FAILURES_FILE)]
        files += sorted((root / "metrics").glob("*.csv")) + sorted((root / "metrics").glob("*.json"))
        files += sorted(root.glob("*.md"))
        for p in files:
            if p.is_file():
                out.append(f"<li>{_link(p, root)}</li>")
        out.append("</ul></body></html>")
        return [run.write_text("index.html", "\n".join(out) + "\n")]
