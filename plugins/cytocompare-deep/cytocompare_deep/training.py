"""The training loop shared by both classifiers: balanced sampling, GPU-resident data, mixed
precision, per-epoch checkpoints that resume bit-identically in deterministic CPU mode.

Per step, nothing leaves the device: the uint8 batch is gathered (or decoded by nvJPEG),
converted to float in [0, 1], augmented on the device (``BatchAugment``, per-sample parameters),
normalised, run under bf16 autocast (CUDA) in channels_last, and the loss is summed on the device;
``.item()`` is called once per epoch.

Checkpoints (``checkpoint_dir/last.pt``) hold only tensors and plain Python values and are read
with ``torch.load(weights_only=True)``: a file with arbitrary pickled objects is refused.

Under a multi-process ``torchrun`` launch (``TrainSetup.group``, :mod:`cytocompare_deep.distributed`)
each rank takes its shard of every global batch, the network runs in DistributedDataParallel,
the epoch's loss is averaged over the ranks, and rank 0 alone writes the checkpoint.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cytocompare import progress
from cytocompare.errors import CytocompareError

CHECKPOINT_FORMAT = "cytocompare-deep/1"
CHECKPOINT_NAME = "last.pt"


class CheckpointError(CytocompareError):
    """A checkpoint cannot be used: unsafe content, another data set, another model."""


# --------------------------------------------------------------------------- devices / precision


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CytocompareError(f"device={device!r} was asked for but CUDA is not available; use device='auto' or 'cpu'")
    return dev


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. ``auto``: bf16 on CUDA where supported, else fp32."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    table = {"fp32": None, "32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "16": torch.float16}
    if precision not in table:
        raise ValueError(f"precision must be one of auto, fp32, bf16, fp16; got {precision!r}")
    if table[precision] is torch.float16 and device.type != "cuda":
        raise ValueError("precision='fp16' needs CUDA; use 'bf16' or 'fp32' on the CPU")
    return table[precision]


# --------------------------------------------------------------------------- sampling / schedule


def epoch_indices(y: np.ndarray, n_classes: int, samples_per_class: int | None, seed: int, epoch: int) -> np.ndarray:
    """Training-set row order for one epoch; a pure function of (seed, epoch), so resume is exact.

    With ``samples_per_class`` every class is drawn that many times with replacement (class-balanced
    upsampling, as in the paper); with ``None`` each row appears once.
    """
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    if samples_per_class is None:
        order = torch.randperm(len(y_t), generator=g)
    else:
        parts = []
        for c in range(n_classes):
            rows = torch.nonzero(y_t == c).flatten()
            if len(rows) == 0:
                continue
            parts.append(rows[torch.randint(len(rows), (int(samples_per_class),), generator=g)])
        allrows = torch.cat(parts)
        order = allrows[torch.randperm(len(allrows), generator=g)]
    return order.numpy()


def make_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    # no weight decay on BatchNorm and bias parameters (standard for from-scratch ResNets)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {name!r}")


def make_scheduler(opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to 0, stepped once per optimisation step."""
    total = max(1, total_steps)
    warm = max(0, min(warmup_steps, total - 1))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# --------------------------------------------------------------------------- RNG + checkpoints


def rng_state(aug_generator: torch.Generator | None) -> dict[str, Any]:
    """All random states as tensors / plain values (safe for ``weights_only=True``)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_version), "internal": list(py_internal), "gauss": py_gauss},
        "augment": aug_generator.get_state() if aug_generator is not None else None,
    }


def set_rng_state(state: dict[str, Any], aug_generator: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if aug_generator is not None and state.get("augment") is not None:
        aug_generator.set_state(state["augment"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then ``os.replace``: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; anything else than tensors/plain values is refused."""
    import pickle

    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than tensors and plain values "
            f"(torch.load weights_only=True said: {str(exc).splitlines()[0]})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    return state


def plain_params(params: dict[str, Any]) -> dict[str, Any]:
    """Only the JSON-like parameter values (what a weights_only checkpoint may hold)."""
    ok = (str, int, float, bool, type(None))
    return {k: v for k, v in params.items() if isinstance(v, ok)}


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainSetup:
    """Everything the loop needs besides the data (filled by the classifier from its params)."""

    name: str
    epochs: int
    samples_per_class: int | None
    batch_size: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    label_smoothing: float
    warmup_epochs: float
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    compile: bool
    augment: Callable[..., torch.Tensor] | None
    random_state: int
    deterministic: bool
    progress: bool
    checkpoint_dir: Path | None
    resume: bool
    fingerprint: str
    classes: list[str]
    params: dict[str, Any]
    num_workers: int = 0
    on_epoch_end: Callable[[int], None] | None = None
    #: this process's part in a torchrun launch (cytocompare_deep.distributed.Group); None: one process
    group: Any = None
    history: list[dict[str, float]] = field(default_factory=list)


def prepare_input(
    x_u8: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    channels_last: bool,
    augment: Callable[..., torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """uint8 (B,3,H,W) -> float, augmented (optional), normalised, channels_last (optional)."""
    x = x_u8.float().div_(255.0)
    if augment is not None:
        x = augment(x, generator=generator)
    x = (x - mean) / std
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class Stepper:
    """One optimisation step (model, optimizer, schedule, scaler, loss); used by the loop and the
    benchmark so both measure the same code."""

    def __init__(self, model: nn.Module, setup: TrainSetup, total_steps: int, warmup_steps: int) -> None:
        self.model = model
        self.setup = setup
        self.opt = make_optimizer(model, setup.optimizer, setup.lr, setup.momentum, setup.weight_decay)
        self.sched = make_scheduler(self.opt, total_steps, warmup_steps)
        fp16 = setup.amp_dtype is torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if fp16 else None
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=setup.label_smoothing)
        # under torchrun the forward pass goes through DistributedDataParallel (gradients averaged
        # over the ranks); the optimizer, the checkpoint and the fitted model keep the plain module
        wrapped = setup.group.wrap(model) if setup.group is not None else model
        self.forward = torch.compile(wrapped) if setup.compile else wrapped

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        dev = self.setup.device.type
        with torch.autocast(dev, dtype=self.setup.amp_dtype or torch.float32, enabled=self.setup.amp_dtype is not None):
            logits = self.forward(x)
        loss = self.loss_fn(logits.float(), y)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        self.sched.step()
        return loss.detach()


def _log(setup: TrainSetup, msg: str) -> None:
    """A line to stderr, or through the run's progress display when there is one (cytocompare.progress)."""
    if setup.progress:
        progress.say(f"[{setup.name}] {msg}")


@dataclass(frozen=True)
class EpochPlan:
    """How many optimisation steps of which batch size make an epoch, and the schedule's length."""

    steps: int
    batch_size: int
    total_steps: int
    warmup_steps: int


def plan_epochs(y: np.ndarray, setup: TrainSetup) -> EpochPlan:
    """Steps per epoch from the epoch's length; the last partial batch is dropped, so every step has
    the same shape (``torch.compile``, batch norm). ``batch_size`` is the global batch: the same
    steps and schedule for any number of torchrun processes, which split each batch evenly."""
    n_per_epoch = len(epoch_indices(y, len(setup.classes), setup.samples_per_class, setup.random_state, 0))
    bs = min(setup.batch_size, n_per_epoch)
    if setup.group is not None:
        setup.group.local_batch(bs)  # refuses a batch the ranks cannot split evenly
    steps = max(1, n_per_epoch // bs)
    return EpochPlan(steps, bs, steps * setup.epochs, int(round(setup.warmup_epochs * steps)))


def restore_checkpoint(
    ckpt_path: Path, setup: TrainSetup, model: nn.Module, stepper: Stepper, gen: torch.Generator
) -> tuple[int, list[float], list[float]]:
    """Load ``ckpt_path`` into the model, optimiser, schedule and every RNG after checking that it
    belongs to this training set, model and schedule; returns (completed epochs, mean, std) and
    puts the checkpoint's history into ``setup.history``."""
    state = load_checkpoint(ckpt_path)
    if state["fingerprint"] != setup.fingerprint or list(state["classes"]) != setup.classes:
        raise CheckpointError(
            f"{ckpt_path} was written for another training set or class list; "
            "delete it, use another checkpoint_dir, or set resume=False"
        )
    if state["params"].get("model") != setup.params.get("model") or state["params"].get("width") != setup.params.get("width"):
        raise CheckpointError(f"{ckpt_path} holds another model ({state['params'].get('model')})")
    model.load_state_dict(state["model"])
    if int(state["epoch"]) < setup.epochs:
        if state["params"].get("epochs") != setup.epochs:
            raise CheckpointError(
                f"{ckpt_path}: epochs changed from {state['params'].get('epochs')} to {setup.epochs}; "
                "the learning-rate schedule depends on it, so this run cannot resume"
            )
        stepper.opt.load_state_dict(state["optimizer"])
        stepper.sched.load_state_dict(state["scheduler"])
        if stepper.scaler is not None and state.get("scaler"):
            stepper.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"], gen)
    setup.history[:] = list(state.get("history", []))
    return int(state["epoch"]), list(state["mean"]), list(state["std"])


def checkpoint_state(
    model: nn.Module, stepper: Stepper, gen: torch.Generator, setup: TrainSetup, epoch: int,
    mean: list[float], std: list[float],
) -> dict[str, Any]:
    """Everything a resume needs after ``epoch`` completed epochs, as tensors and plain values."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": stepper.opt.state_dict(),
        "scheduler": stepper.sched.state_dict(),
        "scaler": stepper.scaler.state_dict() if stepper.scaler is not None else None,
        "rng": rng_state(gen),
        "epoch": epoch,
        "classes": list(setup.classes),
        "params": plain_params(setup.params),
        "fingerprint": setup.fingerprint,
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "history": [dict(h) for h in setup.history],
    }


def run_epoch(
    stepper: Stepper, source: Any, y: np.ndarray, y_dev: torch.Tensor, epoch: int, plan: EpochPlan,
    mean_t: torch.Tensor, std_t: torch.Tensor, gen: torch.Generator,
    advance: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """One epoch of steps over ``source`` (a :func:`~cytocompare_deep.loading.training_images`
    source); ``y`` are the labels on the host (they choose the epoch's rows), ``y_dev`` the same on
    the device (they feed the loss). ``advance(n)`` is told the images of each step (a progress bar).
    Returns the epoch's history record."""
    setup = stepper.setup
    bs, steps = plan.batch_size, plan.steps
    stepper.model.train()
    order = epoch_indices(y, len(setup.classes), setup.samples_per_class, setup.random_state, epoch)[: steps * bs]
    rows = bs  # rows of each step in this process
    if setup.group is not None:  # torchrun: this rank's shard of every global batch
        order, rows = setup.group.shard(order), setup.group.local_batch(bs)
    order_dev = torch.as_tensor(order, device=setup.device)
    loss_sum = torch.zeros((), device=setup.device)
    t0 = time.perf_counter()
    for s, xb in enumerate(source.batches(order, rows)):
        yb = y_dev.index_select(0, order_dev[s * rows : (s + 1) * rows])
        x = prepare_input(xb, mean_t, std_t, setup.channels_last, setup.augment, gen)
        loss_sum += stepper(x, yb)
        if advance is not None:
            advance(bs)
    if setup.group is not None:
        setup.group.mean_(loss_sum)  # the loss of the global batches, the same on every rank
    mean_loss = loss_sum.item() / steps  # the one host sync of the epoch
    secs = time.perf_counter() - t0
    return {
        "epoch": epoch + 1,
        "loss": mean_loss,
        "lr": stepper.sched.get_last_lr()[0],
        "img_per_s": steps * bs / max(secs, 1e-9),
        "seconds": secs,
    }


def train(
    model: nn.Module,
    setup: TrainSetup,
    y: np.ndarray,
    mean: list[float],
    std: list[float],
    source: Any,
) -> tuple[nn.Module, list[float], list[float]]:
    """Train ``model`` in place; returns (model, mean, std) (mean/std from the checkpoint on resume).

    ``source``: where the batches come from (:func:`cytocompare_deep.loading.training_images`
    chose once between the device-resident set and streaming); ``source.batches(order, size)``
    yields uint8 (B, 3, S, S) batches on ``setup.device`` in the given row order.
    """
    dev = setup.device
    plan = plan_epochs(y, setup)
    model.to(dev)
    if setup.channels_last:
        model.to(memory_format=torch.channels_last)
    stepper = Stepper(model, setup, plan.total_steps, plan.warmup_steps)
    gen = torch.Generator(device=dev).manual_seed(setup.random_state + 17)
    start_epoch = 0
    ckpt_path = setup.checkpoint_dir / CHECKPOINT_NAME if setup.checkpoint_dir else None
    if ckpt_path is not None and setup.resume and ckpt_path.exists():
        start_epoch, mean, std = restore_checkpoint(ckpt_path, setup, model, stepper, gen)
        _log(setup, f"resumed from {ckpt_path} after epoch {start_epoch}/{setup.epochs}")
    if setup.group is not None:
        setup.group.agree("the fold's training set, checkpoint and schedule",
                          {"training set": setup.fingerprint[:16], "resumed after epoch": start_epoch,
                           "steps per epoch": plan.steps})
    writes = setup.group is None or setup.group.is_main  # rank 0 alone writes the checkpoint

    mean_t = torch.tensor(mean, device=dev).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=dev).view(1, 3, 1, 1)
    y_dev = torch.as_tensor(np.asarray(y), dtype=torch.int64, device=dev)
    n_images = (setup.epochs - start_epoch) * plan.steps * plan.batch_size
    with progress.bar(f"[{setup.name}] training", n_images) if setup.progress else nullcontext(None) as advance:
        for epoch in range(start_epoch, setup.epochs):
            if setup.group is not None:
                setup.group.seed_epoch(setup.random_state, epoch, gen)
            rec = run_epoch(stepper, source, y, y_dev, epoch, plan, mean_t, std_t, gen, advance)
            setup.history.append(rec)
            _log(
                setup,
                f"epoch {epoch + 1}/{setup.epochs} loss {rec['loss']:.4f} lr {rec['lr']:.4g} "
                f"{rec['img_per_s']:.0f} img/s ({rec['seconds']:.1f} s, {plan.steps} steps of {plan.batch_size})",
            )
            if setup.progress:
                progress.describe(f"[{setup.name}] training, epoch {epoch + 1}/{setup.epochs} loss {rec['loss']:.4f}")
            if ckpt_path is not None and writes:
                save_checkpoint(ckpt_path, checkpoint_state(model, stepper, gen, setup, epoch + 1, mean, std))
            if setup.on_epoch_end is not None:
                setup.on_epoch_end(epoch + 1)
    model.eval()
    return model, mean, std
