"""Image-input classifiers: ResNeXt-50 (32x4d) and the small sequential CNN, one class.

:class:`CNNClassifier` takes the network as its ``architecture`` parameter; the registered names
``resnext50`` and ``sequential-cnn`` are the thin subclasses :class:`ResNeXt50Classifier` and
:class:`SequentialCNNClassifier`, which only say which architecture ``architecture=None`` means.
It follows the cytocompare/scikit-learn conventions (``input = "images"``; ``fit(ImageSet, y)``;
``classes_`` sorted; ``predict_proba`` columns in ``classes_`` order), trains with one loop
(:mod:`cytocompare_deep.training`), and implements the optional runner protocols
(``Checkpointing``, ``WritesArtifacts``, ``ReportsFit``). Fitted models survive ``pickle`` (the
network travels as a CPU ``state_dict``). Started by ``torchrun`` with several processes, ``fit``
trains across them with DistributedDataParallel (``Tags(distributed=True)``;
:mod:`cytocompare_deep.distributed`).

This module must import without torch (the registry reads the constructor's signature): torch and
the plugin's torch modules are imported inside the methods.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cytocompare.base import BaseComponent, check_is_fitted
from cytocompare.protocols import Tags
from cytocompare_deep.augment_settings import DEFAULTS as AUG
from cytocompare_deep.augment_settings import AugmentSettings

#: the networks ``architecture`` may name (:func:`cytocompare_deep.models.build`)
ARCHITECTURES: tuple[str, ...] = ("resnext50", "sequential-cnn")


def _precision_name(amp_dtype) -> str:
    """The short name ``fit_report`` gives an autocast dtype: bf16, fp16, or fp32 for none."""
    return "fp32" if amp_dtype is None else {"bfloat16": "bf16", "float16": "fp16"}[str(amp_dtype).split(".")[-1]]


def _fingerprint(images, y: np.ndarray) -> str:
    """Identity of a training set (paths + labels; cheap, unlike content hashes at paper scale)."""
    h = hashlib.sha256()
    for p, lab in zip(images.paths, y):
        h.update(f"{p}\t{lab}\n".encode())
    if len(images) and str(images.paths[0]).startswith("mem://"):
        h.update("".join(map(str, images.sha256)).encode())
    return h.hexdigest()


def _encode_labels(images, y) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(labels as str, sorted classes, class index per row), after checking them against the images."""
    y = np.asarray(y).astype(str)
    if len(y) != len(images):
        raise ValueError(f"{len(images)} images but {len(y)} labels")
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise ValueError(f"need at least 2 classes to train, got {classes}")
    return y, classes, np.searchsorted(np.asarray(classes), y)


@contextlib.contextmanager
def _torch_algorithms(deterministic: bool, device):
    """Deterministic kernels (or cuDNN autotuning on CUDA) inside; the caller's settings after."""
    import torch

    det_prev = torch.are_deterministic_algorithms_enabled()
    cudnn_prev = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        if deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.use_deterministic_algorithms(det_prev)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn_prev


class CNNClassifier(BaseComponent):
    """A CNN trained from scratch on the images (Matek et al. 2021).

    Parameters
    ----------
    architecture : {"resnext50", "sequential-cnn"} or None
        The network; ``None`` means the class's ``default_architecture`` (how the registered
        subclasses pin theirs).
    width : {"full", "tiny"}
        ResNeXt-50 only: the paper's network or a one-block-per-stage version for CPU tests (the
        sequential CNN has one size).
    epochs : int
        13, as in the paper.
    samples_per_class : int or None
        Draws per class per epoch, with replacement (25,000); ``None`` = plain epochs.
    batch_size : int
        128; under torchrun the global batch, split evenly over the processes.
    lr : float or None
        None: 0.1 * batch / 256 for SGD, 1e-3 for AdamW.
    optimizer : {"sgd", "adamw"}
        SGD with Nesterov momentum, or AdamW.
    momentum, weight_decay, label_smoothing : float
    warmup_epochs : float
        Linear warm-up, then cosine decay to 0.
    input_size : int
        Side in pixels the images are resized to before they enter the network (250). Not to be
        confused with the data spec's ``image_size``, the size a file is expected to have.
    device : str
        "auto" = CUDA if available; under torchrun "auto" and "cuda" mean the GPU of LOCAL_RANK.
    precision : {"auto", "fp32", "bf16", "fp16"}
        "auto" = bf16 autocast on CUDA, fp32 on the CPU.
    channels_last, compile : bool
        Memory format and ``torch.compile``.
    augment : bool
        Train with :class:`~cytocompare_deep.augment.BatchAugment` built from the settings below.
    rotation, shift, shear, flips, stain, hed_sigma, hed_bias, macenko_sigma1, macenko_sigma2, fill, p_stain
        The augmentation settings, forwarded unchanged; their meaning, defaults and checks live
        in :class:`~cytocompare_deep.augment_settings.AugmentSettings`.
    num_workers : int or None
        Decoding workers (None = auto).
    checkpoint_dir : str or None
        Folder for the per-epoch checkpoint (``Checkpointing``: the runner gives each fold one).
    resume : bool
        Continue from ``checkpoint_dir`` when it holds a checkpoint.
    deterministic : bool
        Deterministic kernels (bit-identical resume on the CPU).
    random_state : int
    progress : bool
        One line per epoch on stderr.
    """

    input: ClassVar[str] = "images"
    tags: ClassVar[Tags] = Tags(deterministic=False, requires=("torch",), gpu="optional", distributed=True)
    #: what ``architecture=None`` means for this class
    default_architecture: ClassVar[str] = "resnext50"

    def __init__(
        self,
        architecture: str | None = None,
        width: str = "full",
        epochs: int = 13,
        samples_per_class: int | None = 25000,
        batch_size: int = 128,
        lr: float | None = None,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 5e-5,
        label_smoothing: float = 0.0,
        warmup_epochs: float = 0.5,
        input_size: int = 250,
        device: str = "auto",
        precision: str = "auto",
        channels_last: bool = True,
        compile: bool = False,
        augment: bool = True,
        rotation: float = AUG.rotation,
        shift: float = AUG.shift,
        shear: float = AUG.shear,
        flips: bool = AUG.flips,
        stain: str | None = AUG.stain,
        hed_sigma: float = AUG.hed_sigma,
        hed_bias: float = AUG.hed_bias,
        macenko_sigma1: float = AUG.macenko_sigma1,
        macenko_sigma2: float = AUG.macenko_sigma2,
        fill: float | None = AUG.fill,
        p_stain: float = AUG.p_stain,
        num_workers: int | None = None,
        checkpoint_dir: str | None = None,
        resume: bool = True,
        deterministic: bool = False,
        random_state: int = 0,
        progress: bool = True,
    ) -> None:
        self.architecture = architecture
        self.width = width
        self.epochs = epochs
        self.samples_per_class = samples_per_class
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.warmup_epochs = warmup_epochs
        self.input_size = input_size
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
        self.hed_bias = hed_bias
        self.macenko_sigma1 = macenko_sigma1
        self.macenko_sigma2 = macenko_sigma2
        self.fill = fill
        self.p_stain = p_stain
        self.num_workers = num_workers
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.deterministic = deterministic
        self.random_state = random_state
        self.progress = progress

    # ------------------------------------------------------------------ helpers

    def _architecture(self) -> str:
        name = self.architecture if self.architecture is not None else self.default_architecture
        if name not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}; got {name!r}")
        return name

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
        from cytocompare.distributed import current

        # the node's cores are shared by its torchrun processes
        return max(0, min(8, (os.cpu_count() or 2) // current().local_world_size - 1))

    def augment_settings(self) -> AugmentSettings:
        """The augmentation settings among this classifier's parameters (checked on the way)."""
        return AugmentSettings(**{name: getattr(self, name) for name in AugmentSettings.names()})

    def _make_augment(self):
        if not self.augment:
            return None
        from cytocompare_deep.augment import BatchAugment

        return BatchAugment(**self.augment_settings().as_dict())

    def _device(self):
        from cytocompare_deep.distributed import rank_device

        return rank_device(self.device)

    def _train_setup(self, images, y: np.ndarray, classes: list[str], dev, workers: int, group=None):
        """The training loop's settings, from this classifier's parameters."""
        from cytocompare_deep import training

        return training.TrainSetup(
            name=self._architecture(),
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
            amp_dtype=training.resolve_precision(self.precision, dev),
            channels_last=bool(self.channels_last),
            compile=bool(self.compile),
            augment=self._make_augment(),
            random_state=int(self.random_state),
            deterministic=bool(self.deterministic),
            progress=bool(self.progress) and (group is None or group.is_main),  # one rank reports
            checkpoint_dir=None if self.checkpoint_dir is None else Path(self.checkpoint_dir),
            resume=bool(self.resume),
            fingerprint=_fingerprint(images, y),
            classes=classes,
            params={**self.get_params(deep=False), "model": self._architecture(), "width": self.width},
            num_workers=workers,
            on_epoch_end=getattr(self, "_on_epoch_end", None),
            group=group,
        )

    # ------------------------------------------------------------------ fit

    def fit(self, images, y) -> CNNClassifier:
        import torch

        from cytocompare_deep import distributed, loading, models, training

        y, classes, y_idx = _encode_labels(images, y)
        group = distributed.join(self.device)  # None in one process; under torchrun this rank's part
        dev = group.device if group is not None else self._device()
        setup = self._train_setup(images, y, classes, dev, self._num_workers(images), group)
        fork_devices = [dev.index or 0] if dev.type == "cuda" else []
        with _torch_algorithms(bool(self.deterministic), dev), torch.random.fork_rng(devices=fork_devices), \
                _seeded_numpy_python(self.random_state):
            torch.manual_seed(int(self.random_state))
            # the model is built before any image is decoded: both draw from the seeded RNG
            model = models.build(setup.name, len(classes), width=self.width)
            source, mean, std = loading.training_images(images, int(self.input_size), dev, setup.num_workers,
                                                        int(self.random_state))
            model, mean, std = training.train(model, setup, y_idx, mean, std, source)
        self.classes_ = np.asarray(classes, dtype=object)
        self.model_ = model
        self.mean_ = np.asarray(mean, dtype=np.float32)
        self.std_ = np.asarray(std, dtype=np.float32)
        self.n_parameters_ = models.count_parameters(model)
        self.history_ = list(setup.history)
        self.fit_facts_ = {"device": str(dev), "precision": _precision_name(setup.amp_dtype),
                           "data_on_device": bool(source.resident),
                           "world_size": 1 if group is None else group.world_size}
        return self

    def fit_report(self) -> dict[str, Any]:
        """JSON-able facts of the last fit (``ReportsFit``): the network, where and how it trained,
        and how many epochs the fitted weights have had (including those of a resumed checkpoint)."""
        check_is_fitted(self, "model_")
        name = self._architecture()
        return {
            "architecture": name,
            "width": self.width if name == "resnext50" else None,
            "parameters": int(self.n_parameters_),
            "input_size": int(self.input_size),
            "epochs_completed": len(self.history_),
            "final_loss": float(self.history_[-1]["loss"]) if self.history_ else None,
            "compile": bool(self.compile),
            **self.fit_facts_,
        }

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
            for xb in loading.iter_decoded(images, int(self.input_size), dev, batch_size=batch_size, num_workers=workers):
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

    def write_artifacts(self, out_dir: Path, images, y_true, n_cells: int | None = None,
                        n_confusions: int = 6, per_confusion: int = 4) -> list[Path]:
        """Write the deep arm's explanation figures (Matek et al. 2021, Figs. 5 and 6) for a test set:

        * ``explanations_correct.png``: image | SmoothGrad | Grad-CAM for one *correctly*
          classified cell per class (the most confident one; the paper's choice), in class order;
          ``n_cells`` caps the number of rows (default: every class that has a correct cell);
        * ``misclassified_gallery.png``: the ``n_confusions`` most frequent (true, predicted)
          confusions, a row each, with up to ``per_confusion`` of its most confident errors;
        * ``umap.png`` (+ ``umap.csv``): UMAP of the penultimate features by true class;
        * ``explanations_index.json`` / ``.csv``: which cells the figures show (path, true,
          predicted, probability), for the report's captions.

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
        proba = self.predict_proba(images)
        top = np.argmax(proba, axis=1)
        pred = np.asarray(self.classes_[top], dtype=object).astype(str)
        p_pred = proba[np.arange(len(top)), top]
        correct = explain.correct_cells(y_true, pred, p_pred)
        if n_cells is not None:
            correct = dict(list(correct.items())[: max(0, int(n_cells))])
        pairs = explain.top_confusions(y_true, pred, n_confusions)
        wrong = explain.misclassified_cells(y_true, pred, p_pred, pairs, per_confusion)
        files = {"correct": "explanations_correct.png", "misclassified": "misclassified_gallery.png",
                 "umap": "umap.png"}
        paths: list[Path] = []
        chosen = list(correct.values())
        if chosen:
            dev = self._device()
            model = self.model_.to(dev).eval()
            x_u8 = loading.load_all(images.subset(chosen), int(self.input_size), dev)
            mean = torch.as_tensor(self.mean_, device=dev).view(1, 3, 1, 1)
            std = torch.as_tensor(self.std_, device=dev).view(1, 3, 1, 1)
            x = training.prepare_input(x_u8, mean, std, channels_last=False)
            class_index = {c: k for k, c in enumerate(self.classes_)}
            paths.append(explain.write_explanations(
                model, np.stack([images[i] for i in chosen]), x, y_true[chosen].tolist(), pred[chosen].tolist(),
                out_dir / files["correct"], models.gradcam_target_layer(model),
                targets=[class_index[p] for p in pred[chosen]], probabilities=p_pred[chosen].tolist(),
                title=_correct_cells_title(y_true, correct),
            ))
        else:  # no correctly classified cell at all: nothing to explain, and the index says so
            files.pop("correct")
        shown = sorted({i for rows in wrong for i in rows})
        arrays = {i: images[i] for i in shown}
        paths.append(explain.write_misclassified_gallery(arrays, pairs, wrong, p_pred, out_dir / files["misclassified"],
                                                         per_pair=per_confusion))
        explain.write_umap(self.embed(images), y_true, out_dir / files["umap"], random_state=int(self.random_state))
        paths += [out_dir / "umap.png", out_dir / "umap.csv"]
        paths += list(explain.write_index(out_dir, [str(q) for q in images.paths], y_true, pred, p_pred,
                                          correct, pairs, wrong, files))
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

            model = models.build(self._architecture(), len(self.classes_), width=self.width)
            model.load_state_dict(model_state)
            self.model_ = model.eval()


def _correct_cells_title(y_true: np.ndarray, correct: dict[str, int]) -> str:
    """Title of ``explanations_correct.png``: what was chosen, and the classes without such a cell."""
    missing = sorted(set(y_true.tolist()) - set(correct))
    title = "One correctly classified test cell per class (the most confident)"
    return title + (f"\nno correctly classified cell: {', '.join(missing)}" if missing else "")


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


class ResNeXt50Classifier(CNNClassifier):
    """ResNeXt-50 (32x4d) trained from scratch (Matek et al. 2021); registered as ``resnext50``.
    All parameters: :class:`CNNClassifier`."""

    default_architecture: ClassVar[str] = "resnext50"


class SequentialCNNClassifier(CNNClassifier):
    """Small sequential CNN of about 304k parameters (a stand-in, see docs/deep.md); registered as
    ``sequential-cnn``. All parameters: :class:`CNNClassifier`."""

    default_architecture: ClassVar[str] = "sequential-cnn"
