"""One writer per directory: an exclusive lock file that names its holder.

A run directory (and a feature cache) must be written by one process at a time: two
``cytocompare run`` into one folder would both resume and interleave their results. The lock is
a small JSON file, ``DIR/.lock``, holding the pid, host, start time and command of its holder::

    with DirectoryLock(run_dir, what="run directory"):
        ...  # only this process writes run_dir here

* **Taking it is atomic.** The file is written completely under a private name and then
  hard-linked to ``.lock`` (``link`` fails if ``.lock`` exists), so no other process ever sees a
  half-written lock. Where the file system has no hard links, ``O_CREAT | O_EXCL`` is used instead
  and a lock file that cannot be read yet is given a grace period before it counts as stale.
* **A second process gets** :class:`DirectoryLockedError`, naming the directory and the holder
  (pid, host, since when, command).
* **A stale lock** (its pid is dead on this host, or the pid now belongs to a younger process)
  is taken over: under a short kernel lock on the directory (``flock``, released by the kernel
  even if its owner dies) the stale file is re-read and removed only if it is still the same
  file; then the ordinary atomic creation decides who gets it. Two racers can therefore never
  both win. A lock held on *another* host is never taken over (its pid cannot be checked).
* **Release** happens on leaving the ``with`` block, exception or not, and removes the file only
  if it is still this holder's (a lock deleted by hand and taken by someone else is left alone);
  a forked child never releases its parent's lock.

The lock files of earlier versions of the feature cache held only a pid; :func:`read_lock`
reads those too (as a holder on this host).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from cytocompare.errors import CytocompareError

__all__ = ["LOCK_NAME", "DirectoryLock", "DirectoryLockedError", "LockInfo", "holder_alive", "read_lock"]

LOCK_NAME = ".lock"
_UNREADABLE_GRACE_S = 5.0  # an unreadable lock younger than this may still be being written (O_EXCL fallback)
_MAX_ATTEMPTS = 100
_COMMAND_CHARS = 500


@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock."""

    pid: int
    host: str
    since: str  # ISO 8601, UTC
    command: str
    token: str = ""  # unique per acquisition: tells this holder's file from a later one
    pid_start: str | None = None  # the process's start time (Linux), to detect a reused pid

    @classmethod
    def current(cls, command: str | None = None) -> LockInfo:
        if command is None:
            command = shlex.join(sys.argv) if sys.argv and sys.argv[0] else sys.executable
        return cls(
            pid=os.getpid(), host=socket.gethostname(),
            since=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            command=command[:_COMMAND_CHARS], token=uuid.uuid4().hex, pid_start=_process_start(os.getpid()),
        )

    def to_text(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_text(cls, text: str) -> LockInfo | None:
        """Parse a lock file; ``None`` if it is not one (empty, partial, garbage)."""
        text = text.strip()
        if text.isdigit():  # the feature cache's old format: just the pid
            return cls(pid=int(text), host=socket.gethostname(), since="?", command="?")
        try:
            data = json.loads(text)
            return cls(pid=int(data["pid"]), host=str(data["host"]), since=str(data["since"]),
                       command=str(data["command"]), token=str(data.get("token", "")),
                       pid_start=None if data.get("pid_start") is None else str(data["pid_start"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"process {self.pid} on host {self.host} since {self.since} (command: {self.command})"


class DirectoryLockedError(CytocompareError):
    """Another process holds the directory's lock; ``holder`` says which (``None``: unreadable)."""

    def __init__(self, message: str, *, directory: Path, lock_path: Path, holder: LockInfo | None) -> None:
        super().__init__(message)
        self.directory = directory
        self.lock_path = lock_path
        self.holder = holder


# --------------------------------------------------------------------------------------------
# is the holder still there?
# --------------------------------------------------------------------------------------------


def _process_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[:1] == ["Z"]


def holder_alive(holder: LockInfo) -> bool:
    """Whether the holder may still be running. A holder on another host always may."""
    if holder.host != socket.gethostname():
        return True
    if holder.pid == os.getpid():
        # another lock object of this very process -- unless the file is from an earlier process
        # that had our pid (pids restart with a container)
        mine = _process_start(holder.pid)
        return holder.pid_start is None or mine is None or holder.pid_start == mine
    if holder.pid <= 0:
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except OSError:  # pragma: no cover - e.g. a pid out of range
        return False
    if _is_zombie(holder.pid):
        return False  # killed, not yet reaped: it will never release
    if holder.pid_start is not None:
        start = _process_start(holder.pid)
        if start is not None and start != holder.pid_start:
            return False  # the pid was reused by a newer process
    return True


def read_lock(path: str | Path) -> LockInfo | None:
    """The holder named in a lock file, or ``None`` if it is missing or unreadable."""
    try:
        return LockInfo.from_text(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


# --------------------------------------------------------------------------------------------
# low-level steps
# --------------------------------------------------------------------------------------------


def _create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` if it does not exist; atomic. False if it exists."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        try:
            os.link(tmp, path)  # appears complete or not at all
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network/FUSE file systems)
            pass
    finally:
        tmp.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return True


@contextmanager
def _directory_guard(directory: Path) -> Iterator[None]:
    """A short exclusive kernel lock on the directory, serialising take-over and release.

    ``flock`` is dropped by the kernel when its holder dies, so this guard can never go stale.
    Where ``flock`` is unavailable (Windows, some network file systems) it is skipped: take-over
    then relies on the re-read-before-remove check alone.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # pragma: no cover - flock not supported on this file system
            pass
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _read_raw(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


# --------------------------------------------------------------------------------------------
# the lock
# --------------------------------------------------------------------------------------------


class DirectoryLock:
    """An exclusive, named lock on a directory (see the module docstring).

    ``what`` names the directory's role in messages ("run directory", "feature cache");
    ``error`` is the exception class raised when it is held (a subclass of
    :class:`DirectoryLockedError`, so a caller can keep its own type); ``create`` makes the
    directory first if it is missing.
    """

    def __init__(self, directory: str | Path, *, what: str = "directory", name: str = LOCK_NAME,
                 command: str | None = None, error: type[DirectoryLockedError] = DirectoryLockedError,
                 create: bool = True) -> None:
        self.directory = Path(directory)
        self.path = self.directory / name
        self.what = what
        self.command = command
        self.error = error
        self.create = create
        self.info: LockInfo | None = None  # set while held

    @property
    def held(self) -> bool:
        return self.info is not None

    def acquire(self) -> DirectoryLock:
        if self.info is not None:
            raise RuntimeError(f"{self.path} is already held by this lock object")
        if self.create:
            self.directory.mkdir(parents=True, exist_ok=True)
        info = LockInfo.current(self.command)
        text = info.to_text()
        for _ in range(_MAX_ATTEMPTS):
            if _create_exclusive(self.path, text):
                self.info = info
                return self
            raw = _read_raw(self.path)
            if raw is None:
                continue  # released between our two steps: try again
            holder = LockInfo.from_text(raw)
            if holder is None and _age_s(self.path) < _UNREADABLE_GRACE_S:
                time.sleep(0.01)  # being written by a racer without hard links
                continue
            if holder is not None and holder_alive(holder):
                raise self._locked(holder)
            self._remove_if_unchanged(raw)
        raise self._locked(read_lock(self.path), f"could not take the lock {self.path} in {_MAX_ATTEMPTS} attempts")

    def release(self) -> None:
        info, self.info = self.info, None
        if info is None or info.pid != os.getpid():
            return  # not held, or a forked child: the parent still holds it
        with _directory_guard(self.directory):
            current = read_lock(self.path)
            if current is not None and current.token == info.token:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    # -- helpers -----------------------------------------------------------------------------

    def _remove_if_unchanged(self, seen: str) -> None:
        # Only a file whose holder is gone is removed, and only while it is still byte for byte
        # the file judged stale: under the guard nobody else can remove it and put theirs in
        # between our read and our unlink, so a fresh lock of a racer is never deleted.
        with _directory_guard(self.directory):
            if _read_raw(self.path) == seen:
                self.path.unlink(missing_ok=True)

    def _locked(self, holder: LockInfo | None, message: str | None = None) -> DirectoryLockedError:
        if message is None:
            assert holder is not None
            where = "" if holder.host == socket.gethostname() else (
                "; it runs on another host, so cytocompare cannot tell whether it is still alive")
            message = (f"{self.directory} is in use: the {self.what} is locked by {holder.describe()}{where}. "
                       f"One process at a time may write a {self.what}; wait for that one to finish, "
                       f"or, if it is no longer running, delete {self.path}")
        return self.error(message, directory=self.directory, lock_path=self.path, holder=holder)

    def __repr__(self) -> str:
        return f"DirectoryLock({str(self.directory)!r}, held={self.held})"
