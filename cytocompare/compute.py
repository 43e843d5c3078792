"""Where a run's work is done: here (the local backend) or on a ``dask.distributed`` cluster.

Two kinds of work can leave this process: the chunks of a feature extraction
(:mod:`cytocompare.feature_cache`) and the fit of one method on one fold (:mod:`cytocompare.runner`).
Whatever the backend, only this process (the client) writes: the feature store's rows, in chunk
order (so its files are byte-identical to a local run's), every file of the run directory
(through :mod:`cytocompare.rundir`), and the locks of both. So resume and locking hold exactly as
with the local backend, and the workers need not share the client's file system: images go to
them as their encoded files (:meth:`cytocompare.images.ImageSet.detached`), features and fitted
folds come back.

A task's arguments travel inside the task (nothing is scattered onto one worker), so when a
worker dies the scheduler reruns its tasks elsewhere and nothing is lost; how many tasks are
handed to the cluster at once is bounded (:data:`CHUNKS_PER_THREAD` / :data:`FOLDS_PER_THREAD`
per worker thread), so neither the client nor the scheduler ever holds the whole data set.

The protocol's ``compute`` key (:class:`cytocompare.config.ComputeSpec`) and ``run --scheduler``
choose the backend; both are result-neutral.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from cytocompare.errors import CytocompareError
from cytocompare.images import ImageSet

__all__ = ["DaskBackend", "LocalBackend", "TaskPool", "open_backend"]

Log = Callable[[str], None]

#: feature chunks in the cluster (running or queued) per worker thread: enough that no thread
#: waits for the client, few enough that the scheduler holds a few MB of encoded images per thread
CHUNKS_PER_THREAD = 2
#: fold fits in the cluster per worker thread (each carries its fold's training data)
FOLDS_PER_THREAD = 1


class LocalBackend:
    """This machine: feature chunks in ``n_jobs`` joblib processes, folds in this process."""

    name = "local"

    def __init__(self, n_jobs: int = 1) -> None:
        self.n_jobs = n_jobs

    def map_ordered(self, fn: Callable[..., Any], args: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
        """``fn(*a)`` for every ``a`` of ``args``, in order; in this process for ``n_jobs == 1``
        (no pickling, exact tracebacks)."""
        if self.n_jobs == 1:
            for a in args:
                yield fn(*a)
            return
        from joblib import Parallel, delayed

        yield from Parallel(n_jobs=self.n_jobs, return_as="generator")(delayed(fn)(*a) for a in args)

    @contextmanager
    def pool(self) -> Iterator[None]:
        """No pool: the runner fits each fold itself, one after another."""
        yield None


class DaskBackend:
    """A ``dask.distributed`` cluster reached through ``client``."""

    name = "dask"

    def __init__(self, client: Any, log: Log) -> None:
        self.client = client
        self.log = log
        self._pool: TaskPool | None = None  # the open pool, whose results are written between chunks

    def threads(self) -> int:
        """Worker threads in the cluster now (workers may join or leave during a run); at least 1."""
        return max(1, sum(self.client.nthreads().values()))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A future of ``fn(*args)`` on a worker. Image sets travel as their encoded files
        (:meth:`ImageSet.detached`), since a worker need not see the client's paths."""
        args = tuple(a.detached() if isinstance(a, ImageSet) else a for a in args)
        with warnings.catch_warnings():
            # a fold's training data is meant to be in its task: a worker that dies takes
            # nothing with it that the scheduler cannot give to another (scattered data it would)
            warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
            return self.client.submit(fn, *args, pure=False)

    def map_ordered(self, fn: Callable[..., Any], args: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
        """``fn(*a)`` for every ``a`` of ``args`` on the cluster, yielded in the order of ``args``
        (results that come back early wait here); at most :data:`CHUNKS_PER_THREAD` per worker
        thread are submitted and not yet yielded. A task that raises re-raises here, the rest
        are cancelled."""
        from distributed import as_completed

        todo = iter(args)
        index: dict[Any, int] = {}  # submitted, not yet come back -> position in args
        results: dict[int, Any] = {}  # come back, waiting for an earlier one
        done = as_completed()
        n_submitted = n_yielded = 0
        exhausted = False
        try:
            while True:
                while not exhausted and n_submitted - n_yielded < CHUNKS_PER_THREAD * self.threads():
                    try:
                        a = next(todo)
                    except StopIteration:
                        exhausted = True
                        break
                    future = self.submit(fn, *a)
                    index[future] = n_submitted
                    done.add(future)
                    n_submitted += 1
                if n_yielded == n_submitted:
                    return
                future = next(done)
                results[index.pop(future)] = future.result()  # re-raises the task's exception
                if self._pool is not None:  # folds that finished meanwhile are written now, not later
                    self._pool.handle_ready()
                while n_yielded in results:
                    yield results.pop(n_yielded)
                    n_yielded += 1
        finally:
            if index:
                self.client.cancel(list(index))

    @contextmanager
    def pool(self) -> Iterator[TaskPool]:
        """A pool of fold fits on the cluster (:class:`TaskPool`): every task handled when the
        block ends; cancelled when it ends with an error."""
        pool = self._pool = TaskPool(self, FOLDS_PER_THREAD)
        try:
            yield pool
            pool.wait()
        except BaseException:
            pool.cancel()
            raise
        finally:
            self._pool = None


class TaskPool:
    """Tasks handed to the cluster, each with what to do with its result here (``on_done``).

    ``submit`` waits, handling results as they come back (in any order), while the cluster holds
    ``per_thread`` tasks per worker thread; ``wait`` handles every one left. When a task raises,
    no more are submitted: the tasks still in the cluster are waited for and their results
    handled (no finished work is lost), then the first error is re-raised.
    """

    def __init__(self, backend: DaskBackend, per_thread: int) -> None:
        from distributed import as_completed

        self.backend = backend
        self.per_thread = per_thread
        self._on_done: dict[Any, Callable[[Any], None]] = {}
        self._done = as_completed()

    def __len__(self) -> int:
        return len(self._on_done)

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], on_done: Callable[[Any], None]) -> None:
        """Hand ``fn(*args)`` to the cluster; ``on_done(result)`` runs here when it comes back."""
        while len(self) >= self.per_thread * self.backend.threads():
            self._handle(1)
        future = self.backend.submit(fn, *args)
        self._on_done[future] = on_done
        self._done.add(future)

    def wait(self) -> None:
        """Handle every task still in the cluster."""
        self._handle(len(self))

    def handle_ready(self) -> None:
        """Handle the tasks that have come back, without waiting for any other."""
        while self._on_done and self._done.has_ready():
            self._handle(1)

    def cancel(self) -> None:
        if self._on_done:
            self.backend.client.cancel(list(self._on_done))
            self._on_done.clear()

    def _handle(self, n: int) -> None:
        """Handle the next ``n`` tasks to come back; after a failed one, every task in flight."""
        error: BaseException | None = None
        while self._on_done and (n > 0 or error is not None):
            future = next(self._done)
            on_done = self._on_done.pop(future)
            n -= 1
            try:
                result = future.result()
            except Exception as exc:  # the task's own error, raised once the others are handled
                error = error or exc
                continue
            on_done(result)
        if error is not None:
            raise error


@contextmanager
def open_backend(spec: Any, n_jobs: int, log: Log) -> Iterator[LocalBackend | DaskBackend]:
    """The backend the protocol's ``compute`` key (:class:`cytocompare.config.ComputeSpec`) names,
    open for the block: for ``dask``, a client of the scheduler at ``spec.scheduler``, or of a
    ``LocalCluster`` of ``n_jobs`` single-threaded worker processes started here for
    ``scheduler: local`` (and shut down after)."""
    if spec.backend == "local":
        yield LocalBackend(n_jobs)
        return
    with _client(spec.scheduler, n_jobs, log) as client:
        yield DaskBackend(client, log)


@contextmanager
def _client(address: str, n_jobs: int, log: Log) -> Iterator[Any]:
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise CytocompareError(f"compute backend 'dask' needs dask.distributed: {exc}; "
                               "pip install 'dask[distributed]'") from None
    if address == "local":
        # processes, not threads: feature extraction and the fits hold the GIL. The runner's
        # imports (scikit-learn, ...) are done as a worker starts, also one restarted after a
        # crash, not while it unpickles its first task, which blocks its event loop meanwhile
        with LocalCluster(n_workers=n_jobs, threads_per_worker=1, processes=True, dashboard_address=None,
                          preload=["cytocompare.runner"]) as cluster, Client(cluster) as client:
            log(f"[compute] dask: a local cluster of {n_jobs} single-threaded worker processes ({cluster.scheduler_address})")
            yield client
        return
    try:
        client = Client(address)  # waits distributed.comm.timeouts.connect (30 s by default)
    except (OSError, TimeoutError) as exc:
        raise CytocompareError(f"cannot reach the dask scheduler at {address} (compute.scheduler or --scheduler): "
                               f"{exc}") from None
    with client:
        workers = client.nthreads()
        log(f"[compute] dask: scheduler {address}, {len(workers)} worker(s), {sum(workers.values())} thread(s)"
            + ("" if workers else "; tasks wait until a worker joins"))
        yield client
