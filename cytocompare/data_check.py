"""Does a data folder hold the published data set? Classes and counts against the class scheme.

``cytocompare data check PATH`` calls :func:`check_data` and prints :func:`DataCheckReport`'s
table. The listing and the check of every file are :func:`cytocompare.datasets.load_dataset`'s
(with ``on_bad_file="skip"``, so that every bad file is named rather than the first few); the
check of one image is :func:`cytocompare.images.check_image`; the expected count of each class is
the scheme's ``n_paper`` (``cytocompare/schemes/matek2021.yaml``: 171,374 in all).

The folder *matches* when every class of the scheme is there with its published count, there is
no folder of a class the scheme does not know, and no file is bad (unreadable, truncated, not
RGB, or not of the expected size). Byte-identical and near-identical files are reported but do
not make the folder a mismatch: a run keeps each group on one side of every split.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cytocompare.classes import ClassScheme, load_scheme
from cytocompare.datasets import IGNORED, Layout, ProgressCallback, SkippedFile, load_dataset

__all__ = ["ClassCount", "DataCheckReport", "check_data"]

#: status of a class row (the table's last column)
OK, MISSING, FEWER, MORE, UNKNOWN, NO_COUNT = "ok", "missing", "fewer", "more", "not in scheme", "no published count"


@dataclass(frozen=True)
class ClassCount:
    """One row of the table: a class of the scheme or a folder the scheme does not know."""

    code: str
    name: str
    found: int
    expected: int | None  # the scheme's n_paper; None for a class the scheme lacks or has no count for

    @property
    def status(self) -> str:
        if self.name == "":
            return UNKNOWN
        if self.expected is None:
            return NO_COUNT
        if self.found == 0 and self.expected > 0:
            return MISSING
        return OK if self.found == self.expected else (FEWER if self.found < self.expected else MORE)


@dataclass
class DataCheckReport:
    """What :func:`check_data` found."""

    root: Path
    layout: str
    scheme: str
    image_size: tuple[int, int] | None
    classes: list[ClassCount]
    bad: list[SkippedFile] = field(default_factory=list)
    ignored: list[SkippedFile] = field(default_factory=list)
    duplicate_groups: list[list[str]] = field(default_factory=list)
    near_duplicate_groups: list[list[str]] | None = None  # None: not looked for
    near_duplicate_threshold: int | None = None
    seconds: float = 0.0

    @property
    def found(self) -> int:
        return sum(c.found for c in self.classes)

    @property
    def expected(self) -> int | None:
        counts = [c.expected for c in self.classes if c.name]
        return None if any(x is None for x in counts) else sum(counts)  # type: ignore[misc]

    @property
    def problems(self) -> list[str]:
        """Why the folder does not match the scheme (empty: it matches)."""
        out = []
        by_status = Counter(c.status for c in self.classes)
        for status in (MISSING, FEWER, MORE, UNKNOWN):
            if by_status[status]:
                codes = ", ".join(c.code for c in self.classes if c.status == status)
                out.append(f"{by_status[status]} class(es) {status}: {codes}")
        if self.bad:
            out.append(f"{len(self.bad)} bad file(s)")
        return out

    @property
    def matches(self) -> bool:
        return not self.problems


def check_data(
    path: str | Path,
    *,
    scheme: str | ClassScheme = "matek2021",
    layout: Layout = "auto",
    image_size: tuple[int, int] | None = None,
    near_duplicate_threshold: int | None = None,
    n_jobs: int = -1,
    progress: ProgressCallback | None = None,
) -> DataCheckReport:
    """Compare a data folder (or manifest) against a class scheme's classes and published counts.

    Parameters
    ----------
    path : str or Path
        A data folder in any layout :func:`~cytocompare.datasets.load_dataset` reads.
    scheme : str or ClassScheme
        The class scheme whose ``n_paper`` counts are expected.
    layout : as in :func:`~cytocompare.datasets.load_dataset` (folder names are the class codes)
    image_size : (height, width), optional
        Expected size of every image; another size is a bad file. None: sizes are not checked.
    near_duplicate_threshold : int, optional
        Also group near-identical images (perceptual hash, :mod:`cytocompare.near_duplicates`)
        at this Hamming distance. None: byte-identical files only.
    n_jobs : int
        Threads of the file check and of the near-duplicate search.
    progress : callable, optional
        ``progress(done, total)`` while the files are checked.
    """
    sch = scheme if isinstance(scheme, ClassScheme) else load_scheme(scheme)
    near = near_duplicate_threshold is not None
    data = load_dataset(path, layout=layout, image_size=image_size, on_bad_file="skip",
                        progress=progress, n_jobs=n_jobs, perceptual_hashes=near)
    known = {c.code: c for c in sch.classes}
    rows = [ClassCount(c.code, c.name, data.class_counts.get(c.code, 0), c.n_paper) for c in sch.classes]
    rows += [ClassCount(code, "", n, None) for code, n in sorted(data.class_counts.items()) if code not in known]

    paths = [str(p) for p in data.images.paths]
    by_sha: dict[str, list[str]] = {}
    for p, sha in zip(paths, data.images.sha256):
        by_sha.setdefault(str(sha), []).append(p)
    duplicates = sorted(group for group in by_sha.values() if len(group) > 1)

    near_groups = None
    if near:
        from cytocompare.near_duplicates import find_near_duplicates

        report = find_near_duplicates(data.perceptual_hashes, paths, data.images.labels.tolist(),
                                      threshold=int(near_duplicate_threshold), n_jobs=n_jobs)
        # byte-identical copies hash alike: only groups with more than one distinct file content
        sha_of = dict(zip(paths, (str(s) for s in data.images.sha256)))
        near_groups = [list(g.paths) for g in report.groups if len({sha_of[p] for p in g.paths}) > 1]

    ignored = [s for s in data.skipped if s.cause.startswith(IGNORED)]
    bad = [s for s in data.skipped if not s.cause.startswith(IGNORED)]
    return DataCheckReport(Path(data.root), data.layout, sch.name, image_size, rows, bad, ignored, duplicates,
                           near_groups, near_duplicate_threshold, data.check_seconds)


# --------------------------------------------------------------------------------------------
# presentation (the command prints these)
# --------------------------------------------------------------------------------------------

_LISTED = 10  # files named per kind of problem; the rest are counted


def class_table(report: DataCheckReport):  # -> rich.table.Table
    """The per-class table: code, name, published count, found, difference, status."""
    from rich.table import Table

    table = Table(title=f"{report.root} against the {report.scheme} scheme (layout {report.layout})")
    for col, justify in (("class", "left"), ("name", "left"), ("published", "right"), ("found", "right"),
                         ("difference", "right"), ("status", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for c in report.classes:
        diff = "" if c.expected is None else f"{c.found - c.expected:+,}"
        style = "green" if c.status == OK else "red"
        table.add_row(c.code, c.name, "" if c.expected is None else f"{c.expected:,}", f"{c.found:,}", diff,
                      f"[{style}]{c.status}[/{style}]")
    expected = report.expected
    table.add_section()
    table.add_row("all", "", "" if expected is None else f"{expected:,}", f"{report.found:,}",
                  "" if expected is None else f"{report.found - expected:+,}", "")
    return table


def summary_lines(report: DataCheckReport) -> list[str]:
    """Bad, ignored and duplicate files (the first few named), then the verdict."""
    size = ("sizes not checked (give --image-size or --protocol)" if report.image_size is None
            else f"expected size {report.image_size[1]}x{report.image_size[0]}")
    lines = [f"{report.found + len(report.bad):,} image files checked in {report.seconds:.0f} s; {size}"]

    def listed(title: str, items: list[str]) -> None:
        lines.append(title)
        lines.extend(f"  {x}" for x in items[:_LISTED])
        if len(items) > _LISTED:
            lines.append(f"  ... and {len(items) - _LISTED:,} more")

    if report.bad:
        listed(f"{len(report.bad):,} bad file(s) (unreadable or wrongly sized):",
               [f"{b.path}: {b.cause}" for b in report.bad])
    else:
        lines.append("no bad files")
    if report.ignored:
        listed(f"{len(report.ignored):,} file(s) or folder(s) not read:", [f"{b.path}: {b.cause}" for b in report.ignored])
    if report.duplicate_groups:
        n = sum(len(g) for g in report.duplicate_groups)
        listed(f"{len(report.duplicate_groups):,} group(s) of byte-identical files ({n:,} files; a run keeps each "
               "group on one side of every split):", [", ".join(g) for g in report.duplicate_groups])
    else:
        lines.append("no byte-identical files")
    if report.near_duplicate_groups is not None:
        what = f"perceptual hash, threshold {report.near_duplicate_threshold}"
        if report.near_duplicate_groups:
            listed(f"{len(report.near_duplicate_groups):,} group(s) of near-identical files ({what}):",
                   [", ".join(g) for g in report.near_duplicate_groups])
        else:
            lines.append(f"no near-identical files ({what})")
    if report.matches:
        lines.append(f"MATCHES the {report.scheme} scheme: every class with its published count, no bad file")
    else:
        lines.append(f"DOES NOT MATCH the {report.scheme} scheme: " + "; ".join(report.problems))
    return lines
