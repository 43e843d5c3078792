"""How a run reports what it is doing: plain lines, or a live display on a terminal.

A :class:`Progress` is the runner's ``log`` callable (``progress("line")``) with three more things:

* a verbosity, like pytest's ``-q`` / ``-v``: ``-1`` shows only warnings (and the CLI's final line),
  ``0`` what a run has always shown, ``1`` also the detail lines (:func:`detail`);
* ``folds(total)``: the run's methods × folds, counted as they finish (:func:`folds`);
* ``bar(description, total, unit)``: a counter of images (feature extraction, CNN training) with
  its rate and ETA (:func:`bar`, :meth:`Progress.throttled`).

:class:`PlainProgress` writes lines to stderr, exactly those a run wrote before it existed
(logs and CI read them); its bars and fold counter draw nothing. :class:`RichProgress` prints the
same lines above a live display (``rich``) of the fold counter and the current bar: done of
total, images per second and ETA. :func:`make_progress` picks one by ``sys.stderr.isatty()``.

Code that is not handed the progress (the CNN training loop of the deep plugin) finds the one in
use with :func:`active` (``None`` outside a run started by the CLI: then it prints as before).
"""

from __future__ import annotations

import functools
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

ProgressCallback = Callable[[int, int], None]

QUIET, NORMAL, VERBOSE = -1, 0, 1

#: lines shown even with ``-q``: warnings, and the lines that say something was left out or failed
_WARNING = re.compile(
    r"warning|^\[skip\]|file\(s\) not used|artifacts skipped|could not|\d+ of \d+ [^;]* failed",
    re.IGNORECASE,
)


def is_warning(msg: str) -> bool:
    """Whether a log line is shown under ``-q`` (a warning, something skipped or failed)."""
    return bool(_WARNING.search(msg))


_active: list[Progress] = []


def active() -> Progress | None:
    """The progress of the run in progress (entered with ``with``), or None."""
    return _active[-1] if _active else None


class _Folds:
    """The fold counter of one run: ``start(tag)`` before a fold, ``done(resumed)`` after it."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total = progress, total

    def start(self, tag: str) -> None:
        if self.progress is not None:
            self.progress._fold_start(tag)

    def done(self, resumed: bool = False) -> None:
        if self.progress is not None:
            self.progress._fold_done(resumed)


class Progress:
    """The plain base: lines to ``stream`` (stderr when None), filtered by verbosity; no display.

    Use it as a context manager around a run (``with make_progress(v) as log: Runner(..., log=log)``)
    so that :func:`active` finds it and a live display is taken down however the run ends.
    """

    def __init__(self, verbosity: int = NORMAL, stream: TextIO | None = None) -> None:
        self.verbosity = verbosity
        self.stream = stream

    # -- lines
    def __call__(self, msg: str) -> None:
        """A run's log line: shown unless ``-q`` and it is no warning."""
        if self.verbosity >= NORMAL or is_warning(msg):
            self._write(msg)

    def detail(self, msg: str) -> None:
        """A line only ``-v`` shows."""
        if self.verbosity >= VERBOSE:
            self._write(msg)

    def _write(self, msg: str) -> None:
        print(msg, file=self.stream or sys.stderr, flush=True)

    # -- counters (nothing drawn here)
    def throttled(self, every_s: float, line: Callable[[int, int], str], description: str,
                  unit: str = "images") -> ProgressCallback:
        """A ``progress(done, total)`` callback: the line ``line(done, total)`` at most every
        ``every_s`` seconds (every second with ``-v``) and at the end; nothing with ``-q``."""
        every = min(every_s, 1.0) if self.verbosity >= VERBOSE else every_s
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.perf_counter()
            if now - last[0] > every or done == total:
                last[0] = now
                if self.verbosity >= NORMAL:
                    self._write(line(done, total))

        return progress

    @contextmanager
    def bar(self, description: str, total: int, unit: str = "images") -> Iterator[Callable[[int], None]]:
        """``advance(n)`` of a counter of ``total`` (drawn by a live display only)."""
        yield lambda n: None

    def describe(self, description: str) -> None:
        """The current bar's new description (e.g. an epoch's loss); only a live display shows it."""

    def folds(self, total: int) -> _Folds:
        return _Folds(self, total)

    def _fold_start(self, tag: str) -> None:
        pass

    def _fold_done(self, resumed: bool) -> None:
        pass

    # -- lifetime
    def __enter__(self) -> Progress:
        _active.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self in _active:
            _active.remove(self)


PlainProgress = Progress


class RichProgress(Progress):
    """The same lines, printed above a live display of the fold counter and the current bar.

    ``console``: a ``rich.console.Console`` (tests give one with ``force_terminal=True`` writing
    to a StringIO); default one on stderr. The display is transient: once the run ends only the
    lines remain.
    """

    def __init__(self, verbosity: int = NORMAL, console: Any = None) -> None:
        super().__init__(verbosity)
        from rich.console import Console
        from rich.progress import BarColumn, Progress as _RichProgress, TextColumn, TimeElapsedColumn
        from rich.table import Column

        self.console = console or Console(stderr=True)
        count, rate, eta = _columns()
        self.live = _RichProgress(
            # on a narrow terminal the description is cut short, the numbers never wrap
            TextColumn("{task.description}", markup=False,
                       table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
            BarColumn(bar_width=20), count(table_column=Column(no_wrap=True)),
            rate(table_column=Column(no_wrap=True)), TimeElapsedColumn(table_column=Column(no_wrap=True)),
            eta(table_column=Column(no_wrap=True)),
            console=self.console, transient=True, redirect_stdout=True, redirect_stderr=True,
        )
        self._folds_task: Any = None
        self._bar_task: Any = None

    def _write(self, msg: str) -> None:
        self.console.print(msg, markup=False, highlight=False, soft_wrap=True)

    def _add(self, description: str, total: int, unit: str) -> Any:
        return self.live.add_task(description, total=total, unit=unit, t0=time.monotonic(), c0=0)

    def throttled(self, every_s: float, line: Callable[[int, int], str], description: str,
                  unit: str = "images") -> ProgressCallback:
        """The bar instead of the lines; with ``-v`` the lines too."""
        task: list[Any] = []
        lines = Progress.throttled(self, every_s, line, description, unit) if self.verbosity >= VERBOSE else None

        def progress(done: int, total: int) -> None:
            if not task:
                task.append(self._add(description, total, unit))
                self._bar_task = task[0]
            self.live.update(task[0], completed=done, total=total)
            if lines is not None:
                lines(done, total)
            if done >= total:
                self.live.remove_task(task[0])
                self._bar_task = None
                self.live.refresh()

        return progress

    @contextmanager
    def bar(self, description: str, total: int, unit: str = "images") -> Iterator[Callable[[int], None]]:
        task = self._add(description, total, unit)
        previous, self._bar_task = self._bar_task, task
        try:
            yield lambda n: self.live.advance(task, n)
        finally:
            self.live.remove_task(task)
            self._bar_task = previous
            self.live.refresh()

    def describe(self, description: str) -> None:
        if self._bar_task is not None:
            self.live.update(self._bar_task, description=description)

    def folds(self, total: int) -> _Folds:
        if self._folds_task is not None:
            self.live.remove_task(self._folds_task)
        self._folds_task = self._add("run", total, "folds")
        return _Folds(self, total)

    def _fold_start(self, tag: str) -> None:
        if self._folds_task is not None:
            self.live.update(self._folds_task, description=tag)

    def _fold_done(self, resumed: bool) -> None:
        if self._folds_task is None:
            return
        task = self.live.tasks[[t.id for t in self.live.tasks].index(self._folds_task)]
        if resumed:  # a resumed fold took no time: the rate counts only folds run
            task.fields["c0"] = task.fields.get("c0", 0) + 1
        self.live.advance(self._folds_task, 1)
        self.live.refresh()

    def __enter__(self) -> RichProgress:
        super().__enter__()
        self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.live.stop()
        finally:
            super().__exit__(*exc)


def _rate(task: Any) -> float | None:
    """Units per second since the counter started, not counting what was there already (resumed)."""
    done = task.completed - task.fields.get("c0", 0)
    elapsed = time.monotonic() - task.fields.get("t0", time.monotonic())
    return done / elapsed if done > 0 and elapsed > 0 else None


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


@functools.cache
def _columns() -> tuple[type, ...]:
    """The display's own columns (defined on first use: rich is imported only for a live display)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class CountColumn(ProgressColumn):
        """``folds 3/7``, ``images 120/400``."""

        def render(self, task: Any) -> Text:
            total = "?" if task.total is None else f"{int(task.total)}"
            return Text(f"{task.fields.get('unit', '')} {int(task.completed)}/{total}")

    class RateColumn(ProgressColumn):
        """``35 img/s``; for folds ``12.3 s/fold``."""

        def render(self, task: Any) -> Text:
            rate = _rate(task)
            unit = task.fields.get("unit", "")
            if rate is None:
                return Text("")
            if unit == "folds":
                return Text(f"{1 / rate:.1f} s/fold")
            short = {"images": "img", "files": "files"}.get(unit, unit)
            return Text(f"{rate:.1f} {short}/s" if rate < 10 else f"{rate:.0f} {short}/s")

    class EtaColumn(ProgressColumn):
        """``ETA 0:01:23`` from the rate so far (``ETA -:--:--`` before the first unit)."""

        def render(self, task: Any) -> Text:
            rate = _rate(task)
            if task.total is None or rate is None:
                return Text("ETA -:--:--")
            return Text(f"ETA {_hms(max(task.total - task.completed, 0) / rate)}")

    return CountColumn, RateColumn, EtaColumn


def make_progress(verbosity: int = NORMAL, *, live: bool | None = None) -> Progress:
    """The live display when stderr is a terminal (``live=None``; not ``TERM=dumb``) and rich is
    installed, else plain lines."""
    if live is None:
        live = sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    if live:
        try:
            return RichProgress(verbosity)
        except ImportError:  # pragma: no cover - rich is a dependency
            pass
    return Progress(verbosity)


# -- for code handed a plain ``log`` callable (the runner's ``log`` may be any function) -----------------
def throttled(log: Callable[[str], None], every_s: float, line: Callable[[int, int], str],
              description: str, unit: str = "images") -> ProgressCallback | None:
    """``log.throttled(...)`` when ``log`` is a :class:`Progress`, else None (the caller's own)."""
    return log.throttled(every_s, line, description, unit) if isinstance(log, Progress) else None


def folds(log: Callable[[str], None], total: int) -> _Folds:
    """The fold counter of ``log`` (one that does nothing when ``log`` is no :class:`Progress`)."""
    return log.folds(total) if isinstance(log, Progress) else _Folds(None, total)


def detail(log: Callable[[str], None], msg: str) -> None:
    """A ``-v`` line, when ``log`` is a :class:`Progress` (other logs do not get it)."""
    if isinstance(log, Progress):
        log.detail(msg)


@contextmanager
def bar(description: str, total: int, unit: str = "images") -> Iterator[Callable[[int], None]]:
    """A bar of the :func:`active` progress (``advance(n)``; does nothing without one)."""
    p = active()
    if p is None:
        yield lambda n: None
        return
    with p.bar(description, total, unit) as advance:
        yield advance


def describe(description: str) -> None:
    """The :func:`active` progress's current bar gets a new description (e.g. an epoch's loss)."""
    p = active()
    if p is not None:
        p.describe(description)


def say(msg: str) -> None:
    """A line through the :func:`active` progress, or to stderr as before without one."""
    p = active()
    if p is None:
        print(msg, file=sys.stderr, flush=True)
    else:
        p(msg)
