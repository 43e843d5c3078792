"""The directory lock (issue 8 item 5): exclusive, named holder, stale take-over, real races."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

import cytocompare.locking as locking
from cytocompare.errors import CytocompareError
from cytocompare.locking import LOCK_NAME, DirectoryLock, DirectoryLockedError, LockInfo, holder_alive, read_lock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pid checks and fork are POSIX")

_CTX = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    p = _CTX.Process(target=int)
    p.start()
    p.join()
    return p.pid


def _write_lock(folder: Path, **fields: object) -> Path:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": "2026-01-01T00:00:00+00:00",
            "command": "cytocompare run old.yaml", "token": "t0", "pid_start": None, **fields}
    path = folder / LOCK_NAME
    path.write_text(json.dumps(info))
    return path


# ------------------------------------------------------------------------------------------
# one process
# ------------------------------------------------------------------------------------------


def test_lock_file_names_the_holder_and_is_removed_on_exit(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with DirectoryLock(run, what="run directory", command="cytocompare run p.yaml") as lock:
        assert lock.held
        info = read_lock(run / LOCK_NAME)
        assert info is not None
        assert (info.pid, info.host, info.command) == (os.getpid(), socket.gethostname(), "cytocompare run p.yaml")
        assert info.since.endswith("+00:00") and info.token == lock.info.token
        assert not list(run.glob("*.tmp")), "the private file used for the atomic link is gone"
    assert not lock.held
    assert list(run.iterdir()) == []


def test_released_on_exception_and_reusable(tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        with DirectoryLock(tmp_path):
            1 / 0
    assert not (tmp_path / LOCK_NAME).exists()
    with DirectoryLock(tmp_path):
        assert (tmp_path / LOCK_NAME).exists()


def test_a_second_holder_gets_a_clear_error(tmp_path: Path) -> None:
    with DirectoryLock(tmp_path, what="run directory", command="cytocompare run first.yaml"):
        with pytest.raises(DirectoryLockedError) as caught:
            DirectoryLock(tmp_path, what="run directory").acquire()
    err = caught.value
    assert isinstance(err, CytocompareError)
    text = str(err)
    for part in (str(tmp_path), f"process {os.getpid()}", socket.gethostname(), "since 20",
                 "cytocompare run first.yaml", "run directory", str(tmp_path / LOCK_NAME)):
        assert part in text, part
    assert err.holder is not None and err.holder.pid == os.getpid()
    assert err.directory == tmp_path and err.lock_path == tmp_path / LOCK_NAME
    assert not (tmp_path / LOCK_NAME).exists(), "the first holder released it; the refused one left nothing"


def test_a_caller_keeps_its_own_exception_type(tmp_path: Path) -> None:
    class CacheLockedError(DirectoryLockedError):
        pass

    with DirectoryLock(tmp_path, what="feature cache"):
        with pytest.raises(CacheLockedError, match="feature cache"):
            DirectoryLock(tmp_path, what="feature cache", error=CacheLockedError).acquire()


def test_a_live_process_holding_it_is_respected(tmp_path: Path) -> None:
    path = _write_lock(tmp_path, pid=os.getppid(), token="parent")  # alive, and not us
    with pytest.raises(DirectoryLockedError, match=f"process {os.getppid()}"):
        DirectoryLock(tmp_path).acquire()
    assert json.loads(path.read_text())["token"] == "parent"


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    _write_lock(tmp_path, pid=_dead_pid())
    with DirectoryLock(tmp_path) as lock:
        assert read_lock(tmp_path / LOCK_NAME).token == lock.info.token


def test_the_feature_caches_old_pid_only_lock_is_understood(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text(str(os.getppid()))
    holder = read_lock(tmp_path / LOCK_NAME)
    assert holder is not None and holder.pid == os.getppid() and holder.host == socket.gethostname()
    with pytest.raises(DirectoryLockedError):
        DirectoryLock(tmp_path).acquire()
    (tmp_path / LOCK_NAME).write_text(str(_dead_pid()))
    with DirectoryLock(tmp_path):
        pass


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path: Path) -> None:
    # the pid is alive, but it is a younger process than the one that took the lock
    _write_lock(tmp_path, pid=os.getppid(), pid_start="1")
    assert not holder_alive(read_lock(tmp_path / LOCK_NAME))
    with DirectoryLock(tmp_path):
        pass


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_lock_of_an_earlier_process_with_our_pid_is_stale(tmp_path: Path) -> None:
    _write_lock(tmp_path, pid=os.getpid(), pid_start="1")  # e.g. a killed run in a restarted container
    with DirectoryLock(tmp_path):
        pass
    # while a lock of this very process (another lock object) is respected
    with DirectoryLock(tmp_path):
        with pytest.raises(DirectoryLockedError, match=f"process {os.getpid()}"):
            DirectoryLock(tmp_path).acquire()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path: Path) -> None:
    _write_lock(tmp_path, pid=_dead_pid(), host="some-other-node")
    with pytest.raises(DirectoryLockedError, match="another host"):
        DirectoryLock(tmp_path).acquire()
    assert (tmp_path / LOCK_NAME).exists()


def test_an_unreadable_lock_gets_a_grace_period_then_is_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / LOCK_NAME
    path.write_text("")  # as a racer without hard links sees it before the holder wrote its info
    monkeypatch.setattr(locking, "_MAX_ATTEMPTS", 3)
    with pytest.raises(DirectoryLockedError, match="could not take the lock"):
        DirectoryLock(tmp_path).acquire()
    assert path.exists()
    old = path.stat().st_mtime - 60
    os.utime(path, (old, old))
    with DirectoryLock(tmp_path):
        assert read_lock(path) is not None


def test_release_leaves_someone_elses_lock_alone(tmp_path: Path) -> None:
    lock = DirectoryLock(tmp_path).acquire()
    path = _write_lock(tmp_path, token="someone-else")  # our lock was deleted by hand and retaken
    lock.release()
    assert json.loads(path.read_text())["token"] == "someone-else"


def test_a_forked_child_does_not_release_its_parents_lock(tmp_path: Path) -> None:
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("needs fork")
    lock = DirectoryLock(tmp_path).acquire()
    child = _CTX.Process(target=lock.release)
    child.start()
    child.join()
    assert child.exitcode == 0
    assert (tmp_path / LOCK_NAME).exists()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_acquiring_twice_with_one_object_is_a_bug(tmp_path: Path) -> None:
    with DirectoryLock(tmp_path) as lock:
        with pytest.raises(RuntimeError):
            lock.acquire()


def test_a_missing_directory_is_created_unless_told_not_to(tmp_path: Path) -> None:
    with DirectoryLock(tmp_path / "a" / "b"):
        assert (tmp_path / "a" / "b" / LOCK_NAME).exists()
    with pytest.raises(FileNotFoundError):
        DirectoryLock(tmp_path / "missing", create=False).acquire()


def test_lock_info_text_round_trip() -> None:
    info = LockInfo.current("cmd")
    assert LockInfo.from_text(info.to_text()) == info
    assert LockInfo.from_text("") is None and LockInfo.from_text("{not json") is None
    assert LockInfo.from_text('{"pid": 1}') is None


# ------------------------------------------------------------------------------------------
# real processes
# ------------------------------------------------------------------------------------------


def _racer(folder: str, start: object, release: object, results: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    try:
        lock = DirectoryLock(folder, what="run directory", command=f"racer {os.getpid()}").acquire()
    except DirectoryLockedError as exc:
        results.put(("lost", os.getpid(), exc.holder.pid if exc.holder else None))  # type: ignore[attr-defined]
        return
    results.put(("won", os.getpid(), None))  # type: ignore[attr-defined]
    release.wait()  # type: ignore[attr-defined]
    lock.release()


def _race(folder: Path, n: int) -> list[tuple[str, int, int | None]]:
    start, release, results = _CTX.Barrier(n), _CTX.Event(), _CTX.Queue()
    procs = [_CTX.Process(target=_racer, args=(str(folder), start, release, results)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in range(n)]
    release.set()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return outcomes


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale-lock"])
def test_processes_racing_at_the_same_moment_exactly_one_wins(tmp_path: Path, stale: bool) -> None:
    for round_ in range(5):
        folder = tmp_path / f"round{round_}"
        folder.mkdir()
        if stale:  # all racers find a lock left by a killed run and try to take it over at once
            _write_lock(folder, pid=_dead_pid(), token="stale")
        outcomes = _race(folder, 4)
        winners = [pid for kind, pid, _ in outcomes if kind == "won"]
        assert len(winners) == 1, outcomes
        # every loser was told who holds it: the winner, never the dead process
        assert all(holder == winners[0] for kind, _, holder in outcomes if kind == "lost"), outcomes
        assert not (folder / LOCK_NAME).exists(), "the winner released it"
        assert sorted(p.name for p in folder.iterdir()) == []


def _hold_forever(folder: str, ready: object) -> None:
    DirectoryLock(folder, command="victim").acquire()
    ready.set()  # type: ignore[attr-defined]
    signal.pause()


def test_a_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    ready = _CTX.Event()
    victim = _CTX.Process(target=_hold_forever, args=(str(tmp_path), ready))
    victim.start()
    assert ready.wait(60)
    with pytest.raises(DirectoryLockedError, match="victim"):
        DirectoryLock(tmp_path).acquire()
    os.kill(victim.pid, signal.SIGKILL)  # kill -9: no clean-up ran
    victim.join()
    assert read_lock(tmp_path / LOCK_NAME).pid == victim.pid
    with DirectoryLock(tmp_path, command="next run") as lock:
        assert read_lock(tmp_path / LOCK_NAME).command == "next run" == lock.info.command
