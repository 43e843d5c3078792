"""``index.html``: the whole run on one page (jinja2 template, no JavaScript).

For each split, in the protocol's order: the summary (balanced accuracy strict/tolerant, coverage
and the chance level on external sets), Table 1 as an HTML table (``metrics/table1_<split>.csv``),
the paired statistics in words (``metrics/paired_<split>.csv``, and
``metrics/paired_per_class_<split>.csv`` where it exists, with its chart
``charts/paired_per_class_<split>.png`` beside the sentences), every chart of the split, then the
comparison charts (``charts/compare_*.png``), the explanations (``artifacts/``) and an index of
every file of the run.

Images and files are linked by paths relative to the run directory (not inlined as data URIs):
every file the page names lies inside the run directory, so the page opens from a copied or
moved folder, stays small, and a reader can open each PNG/CSV on its own. The page is written
through :meth:`RunDir.write_text` (atomic, mode from the umask).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

from cytocompare.base import BaseComponent
from cytocompare.feature_failures import FEATURE_FAILURES_FILE, failure_counts, failure_note
from cytocompare.reports import MetricsView, class_names, ensure_metrics, fmt_stat, tolerance_note
from cytocompare.reports.paired import describe_per_class
from cytocompare.rundir import RunDir, is_scratch_name

_SUMMARY_COLUMNS = (
    ("balanced_accuracy_strict", "Balanced acc. (strict)"),
    ("balanced_accuracy_tolerant", "Balanced acc. (tolerant)"),
    ("macro_f1_strict", "Macro-F1 (strict)"),
    ("macro_f1_tolerant", "Macro-F1 (tolerant)"),
)
_EXTERNAL_COLUMNS = (
    ("coverage", "Coverage (called)"),
    ("accuracy_called_strict", "Accuracy among called (strict)"),
    ("accuracy_called_tolerant", "Accuracy among called (tolerant)"),
)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}
#: the files listed first in the index, in this order (each where it exists)
_KEY_FILES = ("run.json", "protocol.yaml", "plugins.json", "dataset.csv", "skipped.csv", "test_dataset.csv",
              "test_skipped.csv", "splits.csv", "splits.json", FEATURE_FAILURES_FILE, "test_feature_failures.csv",
              "near_duplicates.csv", "test_near_duplicates.csv", "test_matching.json", "error.log")
_TEMPLATE = "index.html.j2"


def _float(s: Any) -> float:
    try:
        return float(s) if s not in ("", None) else math.nan
    except (TypeError, ValueError):
        return math.nan


def _num(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "–"


def _p(x: float) -> str:
    if not math.isfinite(x):
        return "–"
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def _pretty(col: str) -> str:
    """``recall_tolerant`` -> ``Recall (tolerant)``; ``n_images`` -> ``Images``."""
    special = {"n_images": "Images", "class": "Class", "name": "Name", "method": "Method"}
    if col in special:
        return special[col]
    words = col.split("_")
    for crit in ("strict", "tolerant"):
        if crit in words:
            words.remove(crit)
            return (" ".join(words) + f" ({crit})").replace("f1", "F1").capitalize().replace("f1", "F1")
    return col.replace("_", " ").capitalize()


def _difference_sentence(a: str, b: str, diff: float, lo: float, hi: float, what: str) -> str:
    """``"deep beats classical on X by 0.12 [0.08, 0.16]"`` from diff = a - b and its 95 % CI."""
    if not math.isfinite(diff):
        return f"{what}: no difference could be computed between {a} and {b}."
    if diff < 0:  # name the better one first
        a, b, diff, lo, hi = b, a, -diff, -hi, -lo
    ci = f"[{_num(lo)}, {_num(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else "(no interval)"
    if diff == 0:
        return f"{a} and {b} score the same on {what} (difference 0.00, 95 % CI {ci})."
    if math.isfinite(lo) and lo > 0:  # the whole interval on a's side
        return f"{a} beats {b} on {what} by {_num(diff)} {ci} (95 % CI; the interval excludes 0)."
    return (f"{a} scores higher than {b} on {what} by {_num(diff)} {ci} (95 % CI), but the interval "
            "includes 0: these data do not show that either is better.")


def _protocol_order(run: RunDir, splits: list[str]) -> list[str]:
    """``splits`` in the order the protocol lists them (protocol.yaml keeps it; run.json's keys are
    sorted), then any others in their given order."""
    proto = run.read_protocol() or {}
    listed = proto.get("splits") if isinstance(proto.get("splits"), dict) else {}
    order = [s for s in listed if s in splits]
    return order + [s for s in splits if s not in order]


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _template():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cytocompare.reports", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    return env.get_template(_TEMPLATE)


class HtmlReporter(BaseComponent):
    """``index.html``: run info; per split summary, Table 1, paired statistics in words and charts;
    comparison charts, explanations and every file of the run. Rendered with jinja2."""

    #: it links what the other reporters wrote, so it runs after them (cytocompare.evaluation reads this)
    runs_last: ClassVar[bool] = True

    def __init__(self, title: str = "") -> None:
        self.title = title

    # ------------------------------------------------------------------ parts of the page
    def _table1(self, run: RunDir, split: str, names: dict[str, str]) -> list[dict[str, Any]]:
        """Table 1 of a split per method: {"method", "header", "rows"} from metrics/table1_<split>.csv."""
        rel = f"metrics/table1_{split}.csv"
        if not (run.path / rel).is_file():
            return []
        rows = run.read_csv(rel)
        if not rows:
            return []
        cols = [c for c in rows[0] if c not in ("method", "class", "name")]
        shown: list[tuple[str, str, str | None]] = []  # (header, value column, sd column)
        for c in cols:
            if c.endswith("_sd") and c[:-3] + "_mean" in cols:
                continue
            if c.endswith("_mean"):
                base = c[:-5]
                shown.append((_pretty(base), c, base + "_sd" if base + "_sd" in cols else None))
            else:
                shown.append((_pretty(c), c, None))
        by_method: dict[str, list[dict[str, str]]] = defaultdict(list)
        for r in rows:
            by_method[r["method"]].append(r)
        out = []
        for method, mrows in by_method.items():
            body = []
            for r in mrows:
                code = r.get("class", "")
                cells = []
                for _, col, sd_col in shown:
                    v = r.get(col, "")
                    x = _float(v)
                    if v == "" or (not math.isfinite(x) and v.lower() in ("nan", "")):
                        cells.append("–")
                    elif col == "n_images" or (math.isfinite(x) and col.startswith("n_")):
                        cells.append(str(int(round(x))) if math.isfinite(x) else v)
                    elif math.isfinite(x):
                        sd = _float(r.get(sd_col, "")) if sd_col else math.nan
                        cells.append(f"{x:.2f} ± {sd:.2f}" if math.isfinite(sd) else f"{x:.2f}")
                    else:
                        cells.append(v)
                body.append({"code": code, "name": r.get("name") or names.get(code, code), "cells": cells})
            out.append({"method": method, "header": [h for h, _, _ in shown], "rows": body})
        return out

    def _paired(self, run: RunDir, split: str) -> list[dict[str, Any]]:
        rel = f"metrics/paired_{split}.csv"
        if not (run.path / rel).is_file():
            return []
        out = []
        for r in run.read_csv(rel):
            a, b, crit = r.get("method_a", ""), r.get("method_b", ""), r.get("criterion", "")
            what = f"balanced accuracy ({crit})" if crit else "balanced accuracy"
            details = []
            n = r.get("n_images", "")
            if n:
                details.append(f"{n} images tested by both")
            if r.get("mcnemar_p", ""):
                details.append(f"McNemar test on the images only one method got right ({r.get('mcnemar_b', '')} "
                               f"only {a}, {r.get('mcnemar_c', '')} only {b}): p = {_p(_float(r['mcnemar_p']))}"
                               + (f", Holm-adjusted {_p(_float(r['mcnemar_p_holm']))}" if r.get("mcnemar_p_holm") else ""))
            if r.get("ttest_p", ""):
                details.append(f"paired t-test over {r.get('n_folds', '')} folds: p = {_p(_float(r['ttest_p']))}"
                               + (f", Holm-adjusted {_p(_float(r['ttest_p_holm']))}" if r.get("ttest_p_holm") else ""))
            if r.get("wilcoxon_p", ""):
                details.append(f"Wilcoxon signed-rank over folds: p = {_p(_float(r['wilcoxon_p']))}")
            out.append({
                "sentence": _difference_sentence(a, b, _float(r.get("diff")), _float(r.get("ci_low")),
                                                 _float(r.get("ci_high")), what),
                "details": "; ".join(details),
            })
        return out

    def _paired_per_class(self, run: RunDir, split: str, names: dict[str, str]) -> list[dict[str, Any]]:
        rel = f"metrics/paired_per_class_{split}.csv"
        if not (run.path / rel).is_file():
            return []
        out = []
        for r in run.read_csv(rel):
            code = r.get("class", "")
            crit = r.get("criterion", "")
            out.append({
                "code": code, "name": names.get(code, code), "a": r.get("method_a", ""), "b": r.get("method_b", ""),
                "n": r.get("n", ""), "criterion": crit,
                "recall_a": _num(_float(r.get("recall_a"))), "recall_b": _num(_float(r.get("recall_b"))),
                "diff": _num(_float(r.get("diff"))),
                "ci": f"[{_num(_float(r.get('ci_low')))}, {_num(_float(r.get('ci_high')))}]",
                "p": _p(_float(r.get("p"))), "p_holm": _p(_float(r.get("p_holm"))),
                # the words of paired_<split>.md: "beats" only where the Holm-corrected p says so, as the chart marks it
                "sentence": describe_per_class(r, names),
            })
        return out

    @staticmethod
    def _by_criterion(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The per-class rows grouped by criterion, in their order: [{"criterion", "rows"}]."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault(r["criterion"], []).append(r)
        return [{"criterion": c, "rows": rs} for c, rs in groups.items()]

    def _external(self, view: MetricsView, split: str, methods: list[str], labels: list[str],
                  names: dict[str, str]) -> dict[str, Any]:
        rows = [{"method": m, "cells": [fmt_stat(view.get(m, split, k), 3) for k, _ in _EXTERNAL_COLUMNS]}
                for m in methods]
        per_class = []
        for c in labels:
            n = view.get(methods[0], split, "n_images", c) if methods else None
            cells = []
            for m in methods:
                rec, rate = view.get(m, split, "recall_called", c), view.get(m, split, "no_call_rate", c)
                cells.append(f"{fmt_stat(rec)} (no call {fmt_stat(rate)})")
            per_class.append({"code": c, "name": names.get(c, c), "n": "–" if n is None else f"{n.mean:.0f}",
                              "cells": cells})
        return {"header": [t for _, t in _EXTERNAL_COLUMNS], "rows": rows, "per_class": per_class}

    def _artifacts(self, root: Path) -> list[dict[str, Any]]:
        base = root / "artifacts"
        if not base.is_dir():
            return []
        groups: dict[str, dict[str, list[str]]] = {}
        for p in sorted(base.rglob("*")):
            if not p.is_file() or is_scratch_name(p.name):
                continue
            group = _rel(p.parent, root)
            g = groups.setdefault(group, {"images": [], "files": []})
            g["images" if p.suffix.lower() in _IMAGE_SUFFIXES else "files"].append(_rel(p, root))
        return [{"folder": k, **v} for k, v in groups.items()]

    def _files(self, root: Path) -> dict[str, Any]:
        every = sorted(_rel(p, root) for p in root.rglob("*") if p.is_file() and not is_scratch_name(p.name)
                       and not any(is_scratch_name(part) for part in p.relative_to(root).parts))
        every = [f for f in every if f != "index.html"]
        key = [f for f in _KEY_FILES if f in every]
        folders: dict[str, list[str]] = defaultdict(list)
        top = []
        for f in every:
            if f in key:
                continue
            if "/" in f:
                folders[f.split("/", 1)[0]].append(f)
            else:
                top.append(f)
        return {"key": key, "top": top, "folders": sorted(folders.items())}

    # ------------------------------------------------------------------ the page
    def context(self, run: RunDir) -> dict[str, Any]:
        """Everything the template shows (the test reads it too)."""
        from cytocompare.evaluation import display_order, split_labels

        view = MetricsView(run)
        info = run.info
        root = run.path
        tested = {split: split_labels(run, split) for split in view.splits()}
        every = display_order(run, set(run.labels()).union(*tested.values()))
        names = class_names(run, every)
        n_train_classes = len(run.labels()) or len(every)
        run_rows = [(k, str(info[k])) for k in ("status", "protocol_name", "protocol_hash", "started", "finished",
                                                 "data") if info.get(k) not in (None, "")]
        test_data = info.get("test_data")
        if isinstance(test_data, dict):  # named test sets: a row each
            run_rows += [(f"test_data.{name}", str(path)) for name, path in test_data.items()]
        elif test_data not in (None, ""):
            run_rows.append(("test_data", str(test_data)))
        run_rows.append(("methods", ", ".join(run.methods())))
        run_rows += [(str(k), str(v)) for k, v in sorted(info.get("versions", {}).items())]
        note = failure_note(run)
        failures = None
        if note:
            failures = {"n": sum(failure_counts(run).values()), "note": note, "file": FEATURE_FAILURES_FILE}
        charts_dir = root / "charts"
        all_charts = sorted(p for p in charts_dir.glob("*.png")) if charts_dir.is_dir() else []
        used: set[Path] = set()
        splits = []
        for split in _protocol_order(run, view.splits()):
            desc = run.splits().get(split, {})
            kind = str(desc.get("kind", ""))
            methods = view.methods(split)
            labels = tested[split]
            # the forest plot of the per-class paired differences sits beside their sentences
            paired_chart = next((p for p in all_charts if p.name == f"paired_per_class_{split}.png"), None)
            used.update([paired_chart] if paired_chart else [])
            split_charts = [p for p in all_charts if p.name == f"recall_{split}.png"]
            split_charts += [p for p in all_charts if p.name.startswith("confusion_") and p.stem.endswith(f"_{split}")]
            split_charts += [p for p in all_charts if p not in split_charts and p not in used
                             and p.stem.endswith(f"_{split}") and not p.name.startswith("compare_")]
            used.update(split_charts)
            n_folds = max((view.n_folds(m, split) for m in methods), default=0)
            summary = [{"method": m, "cells": [fmt_stat(view.get(m, split, k), 3) for k, _ in _SUMMARY_COLUMNS]}
                       for m in methods]
            external = kind == "external"
            splits.append({
                "name": split, "kind": kind, "n_folds": n_folds, "methods": methods, "external": external,
                "classes": [{"code": c, "name": names.get(c, c)} for c in labels],
                "chance": 1.0 / n_train_classes if n_train_classes else math.nan,
                "n_train_classes": n_train_classes,
                "summary_header": [t for _, t in _SUMMARY_COLUMNS], "summary": summary,
                "external_table": self._external(view, split, methods, labels, names) if external else None,
                "table1": self._table1(run, split, names),
                "paired": self._paired(run, split),
                "paired_per_class": self._paired_per_class(run, split, names),
                "paired_per_class_chart": _rel(paired_chart, root) if paired_chart else None,
                "paired_per_class_groups": self._by_criterion(self._paired_per_class(run, split, names)),
                "charts": [_rel(p, root) for p in split_charts],
                "sources": [f for f in (f"metrics/table1_{split}.csv", f"table1_{split}.md",
                                        f"metrics/paired_{split}.csv", f"paired_{split}.md",
                                        f"metrics/paired_per_class_{split}.csv") if (root / f).is_file()],
            })
        compare = [p for p in all_charts if p.name.startswith("compare_")]
        used.update(compare)
        return {
            "title": self.title or f"cytocompare run: {info.get('protocol_name', root.name)}",
            "run_rows": run_rows,
            "classes": [{"code": c, "name": names.get(c, c)} for c in every],
            "tolerance": tolerance_note(run),
            "failures": failures,
            "splits": splits,
            "compare_charts": [_rel(p, root) for p in compare],
            "other_charts": [_rel(p, root) for p in all_charts if p not in used],
            "artifacts": self._artifacts(root),
            "files": self._files(root),
        }

    def render(self, run: RunDir) -> str:
        return _template().render(**self.context(run))

    def report(self, run_dir: Path) -> list[Path]:
        run = ensure_metrics(run_dir)
        return [run.write_text("index.html", self.render(run))]
