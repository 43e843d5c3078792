"""Image-input classifiers: ResNeXt-50 (32x4d) and the small sequential CNN.

Both follow the cytocompare/scikit-learn conventions (``input = "images"``; ``fit(ImageSet, y)``;
``classes_`` sorted; ``predict_proba`` columns in ``classes_`` order) and share one training loop
(:mod:`cytocompare_deep.training`). Fitted models survive ``pickle`` (the network travels as a
CPU ``state_dict``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cytocompare.base import BaseComponent, check_is_fitted


def _fingerprint(images, y: np.ndarray) -> str:
    """Identity of a training set (paths + labels; cheap, unlike content hashes at paper scale)."""
    h = hashlib.sha256()
    for p, lab in zip(images.paths, y):
        h.update(f"{p}\t{lab}\n".encode())
    if len(images) and str(images.paths[0]).startswith("mem://"):
        h.update("".join(map(str, images.sha256)).encode())
    return h.hexdigest()


class _DeepClassifier(BaseComponent):
    input: ClassVar[str] = "images"
    tags: ClassVar[dict[str, Any]] = {"deterministic": False}
    _model_name: ClassVar[str] = ""

    # ------------------------------------------------------------------ helpers

    def _width(self) -> str:
        return "full"

    def _lr(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        # SGD: the linear-scaling rule from 0.1 at batch 256; AdamW: 1e-3
        return 0.1 * self.batch_size / 256 if self.optimizer == "sgd" else 1e-3

    def _num_workers(self, images) -> int:
        if self.num_workers is not None:
            return int(self.num_workers)
        if len(images) and str(images.paths[0]).startswith("mem://"):
            return 0  # in-memory arrays: nothing to decode
        return max(0, min(8, (os.cpu_count() or 2) - 1))

    def _make_augment(self):
        if not self.augment:
            return None
        try:
            from cytocompare_deep.augment import BatchAugment
        except ImportError as exc:  # pragma: no cover - depends on the sibling module
            raise ImportError(
                f"augment=True needs cytocompare_deep.augment.BatchAugment ({exc}); set augment=False to train without"
            ) from exc
        return BatchAugment(
            rotation=float(self.rotation),
            shift=float(self.shift),
            shear=float(self.shear),
            flips=bool(self.flips),
            stain=self.stain,
            hed_sigma=float(self.hed_sigma),
        )

    def _device(self):
        from cytocompare_deep.training import resolve_device

        return resolve_device(self.device)

    # ------------------------------------------------------------------ fit

    def fit(self, images, y) -> _DeepClassifier:
        import torch

        from cytocompare_deep import loading, models, training

        y = np.asarray(y).astype(str)
        if len(y) != len(images):
            raise ValueError(f"{len(images)} images but {len(y)} labels")
        classes = sorted(set(y.tolist()))
        if len(classes) < 2:
            raise ValueError(f"need at least 2 classes to train, got {classes}")
        y_idx = np.searchsorted(np.asarray(classes), y)
        dev = self._device()
        amp = training.resolve_precision(self.precision, dev)
        size = int(self.image_size)
        params = {**self.get_params(deep=False), "model": self._model_name, "width": self._width()}

        det_prev = torch.are_deterministic_algorithms_enabled()
        cudnn_prev = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
        fork_devices = [dev.index or 0] if dev.type == "cuda" else []
        try:
            if self.deterministic:
                torch.use_deterministic_algorithms(True)
                torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
            elif dev.type == "cuda":
                torch.backends.cudnn.benchmark = True
            with torch.random.fork_rng(devices=fork_devices), _seeded_numpy_python(self.random_state):
                torch.manual_seed(int(self.random_state))
                model = models.build(self._model_name, len(classes), width=self._width())
                workers = self._num_workers(images)
                data = None
                if loading.fits_on_device(len(images), size, dev):
                    data = loading.load_all(images, size, dev, num_workers=workers)
                    rows = np.random.RandomState(self.random_state).permutation(len(images))[:2000]
                    mean, std = loading.channel_stats(data[torch.as_tensor(rows, device=dev)])
                else:
                    rows = np.sort(np.random.RandomState(self.random_state).permutation(len(images))[:1000])
                    sample = loading.load_all(images.subset(rows), size, dev, num_workers=workers)
                    mean, std = loading.channel_stats(sample)
                    del sample
                setup = training.TrainSetup(
                    name=self._model_name,
                    epochs=int(self.epochs),
                    samples_per_class=None if self.samples_per_class is None else int(self.samples_per_class),
                    batch_size=int(self.batch_size),
                    lr=self._lr(),
                    optimizer=self.optimizer,
                    momentum=float(self.momentum),
                    weight_decay=float(self.weight_decay),
                    label_smoothing=float(self.label_smoothing),
                    warmup_epochs=float(self.warmup_epochs),
                    device=dev,
                    amp_dtype=amp,
                    channels_last=bool(self.channels_last),
                    compile=bool(self.compile),
                    augment=self._make_augment(),
                    random_state=int(self.random_state),
                    deterministic=bool(self.deterministic),
                    progress=bool(self.progress),
                    checkpoint_dir=None if self.checkpoint_dir is None else Path(self.checkpoint_dir),
                    resume=bool(self.resume),
                    fingerprint=_fingerprint(images, y),
                    classes=classes,
                    params=params,
                    num_workers=workers,
                    on_epoch_end=getattr(self, "_on_epoch_end", None),
                )
                model, mean, std = training.train(
                    model, setup, y_idx, mean, std, data=data, images=images, image_size=size
                )
        finally:
            torch.use_deterministic_algorithms(det_prev)
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn_prev
        self.classes_ = np.asarray(classes, dtype=object)
        self.model_ = model
        self.mean_ = np.asarray(mean, dtype=np.float32)
        self.std_ = np.asarray(std, dtype=np.float32)
        self.n_parameters_ = models.count_parameters(model)
        self.history_ = list(setup.history)
        return self

    # ------------------------------------------------------------------ inference

    def _forward_batches(self, images, features: bool = False, batch_size: int = 256) -> np.ndarray:
        import torch

        from cytocompare_deep import loading, models, training

        check_is_fitted(self, "model_")
        dev = self._device()
        model = self.model_.to(dev).eval()
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        amp = training.resolve_precision(self.precision, dev)
        mean = torch.as_tensor(self.mean_, device=dev).view(1, 3, 1, 1)
        std = torch.as_tensor(self.std_, device=dev).view(1, 3, 1, 1)
        outs = []
        workers = self._num_workers(images)
        with torch.inference_mode(), torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            for xb in loading.iter_decoded(images, int(self.image_size), dev, batch_size=batch_size, num_workers=workers):
                x = training.prepare_input(xb, mean, std, bool(self.channels_last))
                if features:
                    outs.append(models.penultimate(model, x).float())
                else:
                    outs.append(torch.softmax(model(x).float(), dim=1))
        if not outs:
            d = len(self.classes_) if not features else 0
            return np.zeros((0, d), dtype=np.float32)
        return torch.cat(outs).cpu().numpy().astype(np.float32)

    def predict_proba(self, images) -> np.ndarray:
        """(n, n_classes) softmax probabilities, columns in ``classes_`` order."""
        return self._forward_batches(images)

    def predict(self, images) -> np.ndarray:
        proba = self.predict_proba(images)
        return np.asarray(self.classes_[np.argmax(proba, axis=1)], dtype=object).astype(str)

    def embed(self, images) -> np.ndarray:
        """Penultimate features (n, d): d = 2,048 for ResNeXt-50, 384 for the sequential CNN."""
        return self._forward_batches(images, features=True)

    # ------------------------------------------------------------------ artifacts

    def write_artifacts(self, out_dir: Path, images, y_true, n_cells: int | None = None) -> list[Path]:
        """Write ``explanations.png`` (image | SmoothGrad | Grad-CAM for ``n_cells`` test cells, one
        per class first; default: one per class, so no class is left out) and ``umap.png``
        (+ ``umap.csv``) of the penultimate features by class.

        Uses :mod:`cytocompare_deep.explain`; needs the ``explain`` extra (captum, grad-cam,
        umap-learn).
        """
        check_is_fitted(self, "model_")
        try:
            from cytocompare_deep import explain
        except ImportError as exc:
            raise ImportError(
                f"write_artifacts needs the 'explain' extra (pip install 'cytocompare-deep[explain]': "
                f"captum, grad-cam, umap-learn): {exc}"
            ) from exc
        import torch

        from cytocompare_deep import loading, models, training

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        y_true = np.asarray(y_true).astype(str)
        pred = self.predict(images)
        # one cell per class (sorted), then fill up in order
        chosen: list[int] = []
        for c in sorted(set(y_true.tolist())):
            chosen.append(int(np.flatnonzero(y_true == c)[0]))
        if n_cells is None:
            n_cells = len(chosen)
        chosen = (chosen + [i for i in range(len(y_true)) if i not in chosen])[: min(n_cells, len(y_true))]
        dev = self._device()
        model = self.model_.to(dev).eval()
        x_u8 = loading.load_all(images.subset(chosen), int(self.image_size), dev)
        mean = torch.as_tensor(self.mean_, device=dev).view(1, 3, 1, 1)
        std = torch.as_tensor(self.std_, device=dev).view(1, 3, 1, 1)
        x = training.prepare_input(x_u8, mean, std, channels_last=False)
        class_index = {c: k for k, c in enumerate(self.classes_)}
        paths = [
            explain.write_explanations(
                model,
                np.stack([images[i] for i in chosen]),
                x,
                y_true[chosen].tolist(),
                pred[chosen].tolist(),
                out_dir / "explanations.png",
                models.gradcam_target_layer(model),
                targets=[class_index[p] for p in pred[chosen]],
            )
        ]
        explain.write_umap(self.embed(images), y_true, out_dir / "umap.png", random_state=int(self.random_state))
        paths += [out_dir / "umap.png", out_dir / "umap.csv"]
        return [Path(p) for p in paths]

    # ------------------------------------------------------------------ pickling

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_on_epoch_end", None)
        model = state.pop("model_", None)
        if model is not None:
            model = getattr(model, "_orig_mod", model)
            state["_model_state"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        model_state = state.pop("_model_state", None)
        self.__dict__.update(state)
        if model_state is not None:
            from cytocompare_deep import models

            model = models.build(self._model_name, len(self.classes_), width=self._width())
            model.load_state_dict(model_state)
            self.model_ = model.eval()


@contextlib.contextmanager
def _seeded_numpy_python(seed: int):
    """Seed numpy's and Python's global RNGs inside, restore them after."""
    import random

    np_state, py_state = np.random.get_state(), random.getstate()
    np.random.seed(int(seed) % (2**32))
    random.seed(int(seed))
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


_COMMON_DOC = """
    Parameters (shared): ``epochs`` (13), ``samples_per_class`` (25,000 draws per class per epoch,
    with replacement; ``None`` = plain epochs), ``batch_size`` (128), ``lr`` (None: 0.1*batch/256
    for SGD, 1e-3 for AdamW), ``optimizer`` ("sgd" with Nesterov momentum, or "adamw"),
    ``momentum``, ``weight_decay``, ``label_smoothing``, ``warmup_epochs`` (linear warm-up then
    cosine), ``image_size`` (250), ``device`` ("auto" = CUDA if available), ``precision``
    ("auto" = bf16 autocast on CUDA, fp32 on CPU; or "fp32", "bf16", "fp16"), ``channels_last``,
    ``compile`` (torch.compile), ``augment`` and its settings ``rotation``, ``shift``, ``shear``,
    ``flips``, ``stain``, ``hed_sigma`` (passed to ``BatchAugment``), ``num_workers`` (None =
    auto), ``checkpoint_dir`` + ``resume``, ``deterministic``, ``random_state``, ``progress``.
"""


class ResNeXt50Classifier(_DeepClassifier):
    __doc__ = "ResNeXt-50 (32x4d) trained from scratch (Matek et al. 2021).\n" + _COMMON_DOC + (
        "    ``width``: \"full\" (the paper's network) or \"tiny\" (CPU tests).\n"
    )
    _model_name: ClassVar[str] = "resnext50"

    def __init__(
        self,
        epochs: int = 13,
        samples_per_class: int | None = 25000,
        batch_size: int = 128,
        lr: float | None = None,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 5e-5,
        label_smoothing: float = 0.0,
        warmup_epochs: float = 0.5,
        image_size: int = 250,
        device: str = "auto",
        precision: str = "auto",
        channels_last: bool = True,
        compile: bool = False,
        augment: bool = True,
        rotation: float = 180.0,
        shift: float = 0.25,
        shear: float = 0.2,
        flips: bool = True,
        stain: str | None = "hed",
        hed_sigma: float = 0.05,
        num_workers: int | None = None,
        checkpoint_dir: str | None = None,
        resume: bool = True,
        deterministic: bool = False,
        random_state: int = 0,
        progress: bool = True,
        width: str = "full",
    ) -> None:
        self.epochs = epochs
        self.samples_per_class = samples_per_class
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.warmup_epochs = warmup_epochs
        self.image_size = image_size
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.compile = compile
        self.augment = augment
        self.rotation = rotation
        self.shift = shift
        self.shear = shear
        self.flips = flips
        self.stain = stain
        self.hed_sigma = hed_sigma
        self.num_workers = num_workers
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.deterministic = deterministic
        self.random_state = random_state
        self.progress = progress
        self.width = width

    def _width(self) -> str:
        return self.width


class SequentialCNNClassifier(_DeepClassifier):
    __doc__ = "Small sequential CNN of about 304k parameters (stand-in; see docs/deep.md).\n" + _COMMON_DOC
    _model_name: ClassVar[str] = "sequential-cnn"

    def __init__(
        self,
        epochs: int = 13,
        samples_per_class: int | None = 25000,
        batch_size: int = 128,
        lr: float | None = None,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 5e-5,
        label_smoothing: float = 0.0,
        warmup_epochs: float = 0.5,
        image_size: int = 250,
        device: str = "auto",
        precision: str = "auto",
        channels_last: bool = True,
        compile: bool = False,
        augment: bool = True,
        rotation: float = 180.0,
        shift: float = 0.25,
        shear: float = 0.2,
        flips: bool = True,
        stain: str | None = "hed",
        hed_sigma: float = 0.05,
        num_workers: int | None = None,
        checkpoint_dir: str | None = None,
        resume: bool = True,
        deterministic: bool = False,
        random_state: int = 0,
        progress: bool = True,
    ) -> None:
        self.epochs = epochs
        self.samples_per_class = samples_per_class
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.warmup_epochs = warmup_epochs
        self.image_size = image_size
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.compile = compile
        self.augment = augment
        self.rotation = rotation
        self.shift = shift
        self.shear = shear
        self.flips = flips
        self.stain = stain
        self.hed_sigma = hed_sigma
        self.num_workers = num_workers
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.deterministic = deterministic
        self.random_state = random_state
        self.progress = progress
