"""Where this process stands in a ``torchrun`` launch, read from the environment (torch-free).

``torchrun --nproc-per-node N -m cytocompare run ...`` starts N copies of ``cytocompare run``
and tells each, through environment variables, who it is: ``RANK`` (0 … WORLD_SIZE-1, unique
across nodes), ``WORLD_SIZE`` (processes in all), ``LOCAL_RANK`` (its GPU on this node),
``LOCAL_WORLD_SIZE`` (processes on this node), and ``MASTER_ADDR`` / ``MASTER_PORT`` (where the
process group meets; read by torch, not here). Without them this is one process: rank 0 of 1.

The core needs only the answer to "am I rank 0?": rank 0 takes the run directory's lock and
writes every file; the other ranks (*followers*) run the same folds in the same order without
writing anything (:meth:`cytocompare.runner.Runner.run`). The process group itself, the
``DistributedDataParallel`` wrapping and the sharding of each epoch belong to the classifier that
trains across the ranks (the deep plugin's ``cytocompare_deep.distributed``), which declares it
with ``Tags(distributed=True)``. Under ``torchrun`` with more than one process only such methods
run (:func:`methods_not_distributed`): a feature-based method would run on one rank while the
others wait, so it is refused with a message saying how to run it instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from cytocompare.errors import CytocompareError


class LaunchError(CytocompareError):
    """torchrun's environment variables are missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Launch:
    """This process's place among the processes of one run (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that locks and writes the run directory."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process trains together (a world of one runs as a plain process)."""
        return self.world_size > 1

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size} (local rank {self.local_rank})"


def _int_var(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise LaunchError(f"environment variable {name}={raw!r} is not an integer "
                          "(it is set by torchrun; unset it to run as one process)") from None


def current(env: Mapping[str, str] | None = None) -> Launch:
    """The launch described by ``env`` (default: ``os.environ``), checked."""
    env = os.environ if env is None else env
    world = _int_var(env, "WORLD_SIZE", 1)
    if world < 1:
        raise LaunchError(f"WORLD_SIZE={world}: must be at least 1")
    if world > 1 and env.get("RANK") is None:
        raise LaunchError(f"WORLD_SIZE={world} but RANK is not set: start the processes with torchrun "
                          "(or set RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for each)")
    rank = _int_var(env, "RANK", 0)
    if not 0 <= rank < world:
        raise LaunchError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    local_world = _int_var(env, "LOCAL_WORLD_SIZE", 1 if world == 1 else world)
    local_rank = _int_var(env, "LOCAL_RANK", rank if world == local_world else 0)
    if not 0 <= local_rank < max(local_world, 1):
        raise LaunchError(f"LOCAL_RANK={local_rank} is outside 0..{local_world - 1} (LOCAL_WORLD_SIZE={local_world})")
    return Launch(rank, world, local_rank, local_world)


def methods_not_distributed(methods: Mapping[str, tuple[bool, bool]]) -> list[str]:
    """The methods that cannot run under a multi-process torchrun launch.

    ``methods``: name -> (takes precomputed inputs: a feature extractor or selector,
    its classifier's ``Tags.distributed``). A method runs across the ranks only when its classifier
    takes the images and trains with DistributedDataParallel; anything else would run on one rank
    while the others wait for it.
    """
    return [name for name, (has_inputs, distributed) in methods.items() if has_inputs or not distributed]


def refusal(launch: Launch, names: list[str], distributed_ok: list[str]) -> str:
    """The message refusing ``names`` under ``launch`` (``distributed_ok``: those that could run)."""
    hint = (" or keep only those that do: " + " ".join(f"--only {n}" for n in distributed_ok)) if distributed_ok else ""
    return (f"under torchrun (WORLD_SIZE={launch.world_size}) every method must train across the processes "
            f"with DistributedDataParallel; {', '.join(repr(n) for n in names)} "
            f"{'does' if len(names) == 1 else 'do'} not (feature-based methods and classifiers without "
            "Tags(distributed=True) run in one process): run them without torchrun into the same --output "
            f"directory (the run resumes and keeps every finished fold){hint}")
