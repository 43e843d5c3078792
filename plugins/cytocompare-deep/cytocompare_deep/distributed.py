"""Training one fold across the processes of a ``torchrun`` launch (DistributedDataParallel).

The core says where this process stands (:func:`cytocompare.distributed.current`: rank, world
size, local rank, from torchrun's environment variables); this module does the torch side:

* :func:`join` starts the process group once per process (NCCL for CUDA tensors, gloo for CPU
  ones: ``"cpu:gloo,cuda:nccl"`` when CUDA is there, plain gloo otherwise) and picks the rank's
  device, ``cuda:LOCAL_RANK`` (:func:`rank_device`);
* :meth:`Group.shard` splits an epoch's rows: ``batch_size`` stays the *global* batch, and rank
  ``r`` of ``W`` takes rows ``r, r+W, r+2W, ...`` of the epoch order that one process would use
  (the class-balanced draws of :func:`cytocompare_deep.training.epoch_indices`, a pure function of
  the seed and the epoch). Its step ``s`` then holds ``batch_size / W`` rows, and the ranks' rows of
  step ``s`` together are exactly the rows of the single-process step ``s``: the same draws, the
  same number of steps and the same learning-rate schedule for any world size, which is why a
  checkpoint resumes under another world size;
* :meth:`Group.wrap` wraps the network in ``DistributedDataParallel`` (gradients averaged over the
  ranks, i.e. over the global batch); checkpoints hold the plain, unwrapped ``state_dict``, written
  by rank 0 only and read by every rank (so the run directory must be on a file system every node
  sees);
* :meth:`Group.agree` checks, once per fold, that every rank trains the same fold from the same
  checkpoint (a different data path or an unshared run directory is a clear error, not a hang);
* :meth:`Group.seed_epoch` seeds each epoch's augmentation and dropout per (seed, epoch, rank):
  the ranks draw different augmentations, and a resume under any world size is reproducible
  without per-rank RNG states in the checkpoint (with one process the loop keeps its one
  generator, restored from the checkpoint, as before).

Batch-norm statistics are per rank (rank 0's running statistics are broadcast at each forward,
DDP's default), the one difference from a single process with the same global batch.
"""

from __future__ import annotations

import atexit
import datetime
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cytocompare import distributed as launch_env
from cytocompare.errors import CytocompareError

#: how long a rank waits at a collective. Between two folds rank 0 alone predicts the test fold
#: and writes its artifacts while the others wait at the next fold's first collective; torchrun
#: stops every rank as soon as one fails, so a long wait only delays noticing a true hang.
TIMEOUT = datetime.timedelta(hours=2)


class DistributedError(CytocompareError):
    """The processes of a torchrun launch cannot train together (no group, disagreeing ranks)."""


def rank_device(device: str) -> torch.device:
    """The device a classifier's ``device`` parameter means for this process.

    In one process: :func:`cytocompare_deep.training.resolve_device`. Under a multi-process
    torchrun launch, ``"auto"`` and ``"cuda"`` mean this rank's GPU, ``cuda:LOCAL_RANK``; a fixed
    index would put every rank on one GPU and is refused.
    """
    from cytocompare_deep.training import resolve_device

    launch = launch_env.current()
    if not launch.distributed:
        return resolve_device(device)
    dev = resolve_device(device)
    if dev.type != "cuda":
        return dev
    if str(device) != "auto" and torch.device(device).index is not None:
        raise DistributedError(f"device={device!r}: under torchrun every process uses the GPU of its LOCAL_RANK; "
                               "set device to 'cuda' or 'auto'")
    if launch.local_rank >= torch.cuda.device_count():
        raise DistributedError(f"LOCAL_RANK={launch.local_rank} but this node has {torch.cuda.device_count()} "
                               "GPU(s): start at most that many processes per node (--nproc-per-node)")
    return torch.device("cuda", launch.local_rank)


@dataclass(frozen=True)
class Group:
    """This process's part in training one fold across ``world_size`` processes."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, order: np.ndarray) -> np.ndarray:
        """This rank's rows of an epoch order (whose length is a multiple of the world size)."""
        return np.asarray(order)[self.rank :: self.world_size]

    def local_batch(self, batch_size: int) -> int:
        """The rows each rank takes of a global batch of ``batch_size``."""
        if batch_size % self.world_size:
            raise DistributedError(
                f"batch_size {batch_size} is the global batch, split evenly over the processes: under torchrun "
                f"with WORLD_SIZE={self.world_size} it must be a multiple of {self.world_size}")
        return batch_size // self.world_size

    def wrap(self, model: nn.Module) -> nn.Module:
        """The network in ``DistributedDataParallel`` (the optimizer keeps the module's parameters)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)

    def mean_(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` replaced, on every rank, by its mean over the ranks."""
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.div_(self.world_size)

    def agree(self, what: str, value: Any) -> None:
        """Every rank must hold the same ``value`` (JSON-like); else a clear error on every rank."""
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        if any(v != values[0] for v in values):
            shown = "; ".join(f"rank {r}: {v}" for r, v in enumerate(values))
            raise DistributedError(
                f"the processes of this torchrun launch disagree on {what} ({shown}); every rank must read the "
                "same data at the same path and the same run directory (a file system every node sees)")

    def seed_epoch(self, seed: int, epoch: int, generator: torch.Generator) -> None:
        """Seed the augmentation generator and torch's global RNG (dropout) for (seed, epoch, rank)."""
        a, b = np.random.SeedSequence([int(seed), int(epoch), self.rank, 17]).generate_state(2)
        generator.manual_seed(int(a))
        torch.manual_seed(int(b))


def join(device: str) -> Group | None:
    """This process's :class:`Group` under a multi-process torchrun launch, else None (one process).

    The process group is started on the first call (``env://``: torchrun's MASTER_ADDR,
    MASTER_PORT, RANK, WORLD_SIZE) and kept for the folds that follow.
    """
    launch = launch_env.current()
    if not launch.distributed:
        return None
    dev = rank_device(device)
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        try:
            dist.init_process_group(backend, timeout=TIMEOUT)
        except (ValueError, RuntimeError) as exc:
            raise DistributedError(f"{launch.describe()}: cannot join the process group ({exc}); start the "
                                   "processes with torchrun, which sets MASTER_ADDR and MASTER_PORT") from None
        atexit.register(_leave)
    if dist.get_world_size() != launch.world_size or dist.get_rank() != launch.rank:
        raise DistributedError(f"the process group has rank {dist.get_rank()} of {dist.get_world_size()}, "
                               f"the environment says {launch.describe()}")
    return Group(launch.rank, launch.world_size, dev)


def _leave() -> None:
    """Leave the process group at exit (torch warns about a group left undestroyed)."""
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - exiting anyway; a peer may already be gone
            pass
