"""Explainability and feature-space figures (Matek et al. 2021, Figs. 5 and 6).

* :func:`smoothgrad_maps`: SmoothGrad (Smilkov et al. 2017) through captum's
  ``NoiseTunnel(Saliency(model))``.
* :func:`gradcam_maps`: Grad-CAM (Selvaraju et al. 2017) through ``pytorch_grad_cam.GradCAM``.
* :func:`write_explanations`: one PNG, rows = cells, columns = image | SmoothGrad | Grad-CAM.
* :func:`correct_cells`, :func:`top_confusions`, :func:`misclassified_cells`: which test cells
  the figures show (one correctly classified cell per class, as in the paper's Fig. 5; the most
  frequent (true, predicted) confusions).
* :func:`write_misclassified_gallery`: one PNG, a row per confusion, its most confident errors.
* :func:`write_index`: ``explanations_index.json`` + ``.csv``, the cells each figure used.
* :func:`write_umap`: UMAP (McInnes et al. 2018) of penultimate features coloured by class,
  plus the 2-D coordinates as CSV.

Pitfalls handled here (see the project's deep-learning notes): both libraries need the model
in eval mode (GradCAM's constructor even calls ``model.eval()`` itself), so the model's
train/eval mode is restored afterwards; GradCAM is used as a context manager so its hooks are
always released; its targets are ``ClassifierOutputTarget`` objects; GradCAM's backward
pass writes parameter ``.grad`` (it calls ``model.zero_grad()``), so existing gradients are
saved and restored; captum's ``stdevs`` is a Python float in input units.

This module imports torch, captum and pytorch_grad_cam (the ``explain`` extra); the plugin's
``__init__`` must not import it.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cytocompare_deep.models import gradcam_target_layer

__all__ = ["correct_cells", "gradcam_maps", "misclassified_cells", "smoothgrad_maps", "top_confusions",
           "write_explanations", "write_index", "write_misclassified_gallery", "write_umap"]


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
@contextmanager
def _eval_mode(model: nn.Module, keep_grads: bool = False) -> Iterator[None]:
    """Eval mode for the duration (dropout off, batch-norm running stats), then the old mode back.

    With ``keep_grads``, parameter ``.grad`` tensors are saved and restored, so that explaining
    between an optimiser's ``backward`` and ``step`` does not change training.
    """
    was_training = model.training
    saved = [(p, None if p.grad is None else p.grad.clone()) for p in model.parameters()] if keep_grads else []
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
        for p, g in saved:
            p.grad = g


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _as_target_list(targets: Sequence[int] | torch.Tensor | int, n: int) -> list[int]:
    if isinstance(targets, int):
        return [targets] * n
    out = [int(t) for t in (targets.tolist() if isinstance(targets, torch.Tensor) else targets)]
    if len(out) != n:
        raise ValueError(f"need one target per image: {n} images, {len(out)} targets")
    return out


def _normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Scale each (H, W) map to [0, 1] by its own min and max; constant maps become zeros (no NaN)."""
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - lo
    safe = np.where(span > 1e-12, span, 1.0)
    return np.where(span > 1e-12, (maps - lo) / safe, 0.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# SmoothGrad
# ------------------------------------------------------------------------------------------------
def smoothgrad_maps(
    model: nn.Module,
    x: torch.Tensor,
    targets: Sequence[int] | torch.Tensor | int,
    *,
    n_samples: int = 25,
    noise_level: float = 0.15,
    batch_size: int = 8,
    nt_samples_batch_size: int | None = None,
) -> np.ndarray:
    """SmoothGrad saliency maps: mean absolute input gradient over noisy copies of each image.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits (B, n_classes); put in eval mode for the call.
    x : Tensor
        (B, C, H, W) inputs exactly as the model sees them (normalised).
    targets : sequence of int, Tensor or int
        Class index to explain per image (typically the predicted class).
    n_samples : int
        Noisy copies per image (captum ``nt_samples``).
    noise_level : float
        Noise standard deviation as a fraction of the input range ``x.max() - x.min()`` of the
        whole batch (Smilkov et al. recommend 10-20 %). captum's default ``stdevs=1.0`` is in
        input units and far too large for normalised images.
    batch_size : int
        Images per captum call (memory grows with ``batch_size * nt_samples_batch_size``).
    nt_samples_batch_size : int or None
        Noisy copies per forward pass; ``None`` -> ``min(n_samples, 16)``.

    Returns
    -------
    np.ndarray
        (B, H, W) float32 maps in ``[0, 1]``: absolute gradients, max over channels, each map
        divided by its own range. Seed ``torch.manual_seed`` first for reproducible noise.
    """
    from captum.attr import NoiseTunnel, Saliency

    device = _model_device(model)
    x = x.detach().to(device)
    tlist = _as_target_list(targets, x.shape[0])
    stdev = float(noise_level * float(x.max() - x.min()))  # captum asserts a Python float
    nt_batch = nt_samples_batch_size or min(n_samples, 16)
    out = []
    with _eval_mode(model), torch.enable_grad():
        tunnel = NoiseTunnel(Saliency(model))
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start : start + batch_size].clone().requires_grad_(True)
            target = torch.tensor(tlist[start : start + batch_size], device=device)
            attr = tunnel.attribute(chunk, nt_type="smoothgrad", nt_samples=n_samples, stdevs=stdev,
                                    target=target, nt_samples_batch_size=nt_batch)
            # Saliency returns |grad| already (abs=True); max over colour channels as in the paper.
            out.append(attr.detach().abs().amax(dim=1).float().cpu().numpy())
    return _normalise_maps(np.concatenate(out, axis=0))


# ------------------------------------------------------------------------------------------------
# Grad-CAM
# ------------------------------------------------------------------------------------------------
def gradcam_maps(
    model: nn.Module,
    x: torch.Tensor,
    targets: Sequence[int] | torch.Tensor | int,
    target_layer: nn.Module | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM maps upsampled to the input size.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits.
    x : Tensor
        (B, C, H, W) model inputs.
    targets : sequence of int, Tensor or int
        Class index to explain per image.
    target_layer : nn.Module or None
        Layer whose activations are weighted; ``models.gradcam_target_layer(model)`` when ``None``.
    batch_size : int
        Images per Grad-CAM call.

    Returns
    -------
    np.ndarray
        (B, H, W) float32 in ``[0, 1]``. A map can be all zeros: Grad-CAM is
        ``ReLU(sum_k w_k A_k)``, and when the weighted activations are negative everywhere (the
        layer's evidence speaks against the target class, typical when explaining a class the
        model does not predict, or with an untrained / saturated model) the ReLU clips the whole
        map. Such maps are returned as zeros, never NaN.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = target_layer if target_layer is not None else gradcam_target_layer(model)
    device = _model_device(model)
    x = x.detach().to(device)
    tlist = _as_target_list(targets, x.shape[0])
    out: list[np.ndarray] = []
    with _eval_mode(model, keep_grads=True), torch.enable_grad():
        with GradCAM(model=model, target_layers=[layer]) as cam:
            for start in range(0, x.shape[0], batch_size):
                # An input that requires grad makes the layer's activations require grad even when
                # the model's parameters are frozen (otherwise GradCAM finds no gradient).
                chunk = x[start : start + batch_size].clone().requires_grad_(True)
                result = cam(input_tensor=chunk,
                             targets=[ClassifierOutputTarget(t) for t in tlist[start : start + batch_size]])
                out.append(np.asarray(result, dtype=np.float32))
        # GradCAM.__exit__ swallows IndexError (it prints a message instead), which is what an
        # empty gradient list raises; without this check we would return garbage silently.
        if len(out) != -(-x.shape[0] // batch_size):
            raise RuntimeError(
                "Grad-CAM produced no map: the target layer received no gradient. Check that it is "
                "used in the forward pass and that its output depends on the input.")
    return _normalise_maps(np.concatenate(out, axis=0))


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------
def _resize_maps(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    if maps.shape[1:] == (height, width):
        return maps
    t = torch.from_numpy(maps)[:, None]
    return torch.nn.functional.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[:, 0].numpy()


def write_explanations(
    model: nn.Module,
    images_uint8: np.ndarray,
    x_normalised: torch.Tensor,
    labels_true: Sequence[str],
    labels_pred: Sequence[str],
    out_path: Path | str,
    target_layer: nn.Module | None = None,
    *,
    targets: Sequence[int] | None = None,
    n_samples: int = 25,
    noise_level: float = 0.15,
    probabilities: Sequence[float] | None = None,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """One PNG: a row per cell with the image, its SmoothGrad overlay and its Grad-CAM overlay.

    Parameters
    ----------
    model : nn.Module
        The trained classifier.
    images_uint8 : np.ndarray
        (B, H, W, 3) uint8 images for display (any size; maps are resized to it).
    x_normalised : Tensor
        (B, 3, h, w) the same images as the model sees them.
    labels_true, labels_pred : sequence of str
        Class names for the titles ("true / predicted", as in the paper's Fig. 5).
    out_path : Path or str
        PNG to write (parent folders are created).
    target_layer : nn.Module or None
        Grad-CAM layer; :func:`cytocompare_deep.models.gradcam_target_layer` when ``None``.
    targets : sequence of int or None
        Class indices to explain; the model's predictions (argmax) when ``None``.
    n_samples, noise_level : int, float
        SmoothGrad settings, see :func:`smoothgrad_maps`.
    probabilities : sequence of float or None
        The predicted class's probability per cell, shown in the title when given.
    title : str or None
        Figure title (e.g. which cells were chosen, and which classes had none).
    dpi : int
        Figure resolution.

    Returns
    -------
    Path
        ``out_path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images_uint8)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images_uint8 must be (B, H, W, 3), got {images.shape}")
    n = images.shape[0]
    if not (len(labels_true) == len(labels_pred) == n == x_normalised.shape[0]):
        raise ValueError("images, x_normalised, labels_true and labels_pred must have the same length")
    if targets is None:
        with _eval_mode(model), torch.no_grad():
            targets = model(x_normalised.to(_model_device(model))).argmax(dim=1).tolist()
    smooth = smoothgrad_maps(model, x_normalised, targets, n_samples=n_samples, noise_level=noise_level)
    cams = gradcam_maps(model, x_normalised, targets, target_layer)
    h, w = images.shape[1:3]
    smooth, cams = _resize_maps(smooth, h, w), _resize_maps(cams, h, w)

    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.6 * n), squeeze=False)
    for i in range(n):
        ok = labels_true[i] == labels_pred[i]
        axes[i, 0].imshow(images[i])
        p = "" if probabilities is None else f" (p={float(probabilities[i]):.2f})"
        axes[i, 0].set_title(f"true {labels_true[i]} / pred {labels_pred[i]}{p}", fontsize=9,
                             color="black" if ok else "firebrick")
        # SmoothGrad is sparse and speckled: shown as a heat map over a dimmed grey copy of the cell.
        grey = images[i].mean(axis=2) / 255.0
        axes[i, 1].imshow(grey, cmap="gray", vmin=0, vmax=1, alpha=0.6)
        axes[i, 1].imshow(smooth[i], cmap="inferno", vmin=0, vmax=1, alpha=0.7)
        axes[i, 1].set_title("SmoothGrad", fontsize=9)
        axes[i, 2].imshow(images[i])
        axes[i, 2].imshow(cams[i], cmap="jet", vmin=0, vmax=1, alpha=0.45)
        # an all-zero map (ReLU clipped everything, see gradcam_maps) is said, not shown as "no heat"
        axes[i, 2].set_title("Grad-CAM" if cams[i].max() > 0 else "Grad-CAM (map all 0)", fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------------------------
# which cells the figures show
# ------------------------------------------------------------------------------------------------
def correct_cells(y_true: Sequence[str], y_pred: Sequence[str], p_pred: Sequence[float],
                  class_order: Sequence[str] | None = None) -> dict[str, int]:
    """One correctly classified cell per class (the paper's choice for Fig. 5): the most confident.

    Parameters
    ----------
    y_true, y_pred : sequence of str
        True and predicted class per cell.
    p_pred : sequence of float
        Probability the model gave its prediction, per cell.
    class_order : sequence of str or None
        Order of the result; default: sorted classes of ``y_true``.

    Returns
    -------
    dict
        class -> row index of its correctly classified cell with the highest ``p_pred`` (the first
        such row on ties). A class none of whose cells was classified correctly is absent.
    """
    t, p, prob = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str), np.asarray(p_pred, float)
    order = list(class_order) if class_order is not None else sorted(set(t.tolist()))
    out: dict[str, int] = {}
    for cls in order:
        rows = np.flatnonzero((t == cls) & (p == cls))
        if len(rows):
            out[cls] = int(rows[np.argmax(prob[rows])])  # argmax: first row on ties
    return out


def top_confusions(y_true: Sequence[str], y_pred: Sequence[str], k: int = 6) -> list[tuple[str, str, int]]:
    """The ``k`` most frequent (true, predicted) pairs with true != predicted, as
    ``(true, predicted, count)``, most frequent first; ties in alphabetical order of the pair."""
    pairs = Counter((str(a), str(b)) for a, b in zip(y_true, y_pred) if str(a) != str(b))
    ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(a, b, int(n)) for (a, b), n in ranked[: max(0, int(k))]]


def misclassified_cells(y_true: Sequence[str], y_pred: Sequence[str], p_pred: Sequence[float],
                        pairs: Sequence[tuple[str, str, int]], per_pair: int = 4) -> list[list[int]]:
    """For each (true, predicted, count) pair, up to ``per_pair`` row indices of such cells, most
    confident error first (highest ``p_pred``; the earlier row on ties)."""
    t, p, prob = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str), np.asarray(p_pred, float)
    out = []
    for a, b, _ in pairs:
        rows = np.flatnonzero((t == a) & (p == b))
        rows = rows[np.argsort(-prob[rows], kind="stable")]
        out.append([int(i) for i in rows[: max(0, int(per_pair))]])
    return out


def write_misclassified_gallery(
    images: Sequence[np.ndarray],
    pairs: Sequence[tuple[str, str, int]],
    cells: Sequence[Sequence[int]],
    p_pred: Sequence[float],
    out_path: Path | str,
    *,
    per_pair: int = 4,
    dpi: int = 110,
) -> Path:
    """One PNG (the paper's Fig. 6 idea): a row per confusion titled "true BLA → predicted PMO
    (n=12)", with up to ``per_pair`` of its cells, each captioned with the predicted class's
    probability. ``images[i]`` is the (H, W, 3) uint8 image of row ``i``; ``pairs`` and ``cells``
    come from :func:`top_confusions` and :func:`misclassified_cells`. With no confusion at all the
    figure says so (the file exists either way, so a report's link resolves)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(pairs) != len(cells):
        raise ValueError(f"{len(pairs)} pairs but {len(cells)} cell lists")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not pairs:
        fig = plt.figure(figsize=(6, 1.2))
        fig.text(0.5, 0.5, "No misclassified cells in this test set.", ha="center", va="center")
        fig.savefig(out, dpi=dpi)
        plt.close(fig)
        return out
    ncols = max(1, min(int(per_pair), max(len(c) for c in cells)))
    fig = plt.figure(figsize=(max(2.1 * ncols, 4.2), 2.5 * len(pairs)))
    subfigs = np.atleast_1d(fig.subfigures(len(pairs), 1))
    for sub, (a, b, n), rows in zip(subfigs, pairs, cells):
        sub.suptitle(f"true {a} \u2192 predicted {b} (n={n})", fontsize=10, y=0.97)
        axes = np.atleast_1d(sub.subplots(1, ncols))
        sub.subplots_adjust(left=0.03, right=0.97, top=0.86, bottom=0.1, wspace=0.08)
        for j, ax in enumerate(axes):
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(rows):
                ax.imshow(np.asarray(images[rows[j]]))
                ax.set_xlabel(f"p({b})={float(p_pred[rows[j]]):.2f}", fontsize=8)
            else:
                ax.axis("off")
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def write_index(
    out_dir: Path | str,
    paths: Sequence[str],
    y_true: Sequence[str],
    y_pred: Sequence[str],
    p_pred: Sequence[float],
    correct: dict[str, int],
    pairs: Sequence[tuple[str, str, int]],
    cells: Sequence[Sequence[int]],
    files: dict[str, str],
) -> tuple[Path, Path]:
    """``explanations_index.json`` and ``explanations_index.csv`` in ``out_dir``: which cells each
    figure shows (path, true, predicted, probability of the prediction), so a report can caption
    them.

    The JSON holds ``files`` (figure -> file name), ``correct`` (one entry per shown class, in row
    order), ``classes_without_correct_cell`` and ``misclassified`` (one entry per confusion with its
    ``count`` and ``cells``). The CSV has one row per shown cell: ``figure, row, column, path,
    true, predicted, probability, pair_count``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def cell(i: int) -> dict:
        return {"path": str(paths[i]), "true": str(y_true[i]), "predicted": str(y_pred[i]),
                "probability": round(float(p_pred[i]), 6)}

    shown = sorted(set(map(str, y_true)))
    doc = {
        "files": dict(files),
        "correct": [{"class": c, **cell(i)} for c, i in correct.items()],
        "classes_without_correct_cell": [c for c in shown if c not in correct],
        "misclassified": [{"true": a, "predicted": b, "count": int(n), "cells": [cell(i) for i in rows]}
                          for (a, b, n), rows in zip(pairs, cells)],
    }
    jpath = out_dir / "explanations_index.json"
    jpath.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    cpath = out_dir / "explanations_index.csv"
    with cpath.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["figure", "row", "column", "path", "true", "predicted", "probability", "pair_count"])
        for r, e in enumerate(doc["correct"]):
            w.writerow([files.get("correct", ""), r, 0, e["path"], e["true"], e["predicted"],
                        f"{e['probability']:.6g}", ""])
        for r, m in enumerate(doc["misclassified"]):
            for c, e in enumerate(m["cells"]):
                w.writerow([files.get("misclassified", ""), r, c, e["path"], e["true"], e["predicted"],
                            f"{e['probability']:.6g}", m["count"]])
    return jpath, cpath


# Up to 10 classes: tab10 (every colour distinct; tab20 pairs near-identical shades). The
# paper's 21 classes: tab20 plus one more distinct colour, then cycle.
def _class_colours(n: int) -> list[tuple[float, ...]]:
    import matplotlib

    if n <= 10:
        return [tuple(c) for c in matplotlib.colormaps["tab10"].colors[:n]]
    base = list(matplotlib.colormaps["tab20"].colors) + [(0.0, 0.0, 0.0)] + list(matplotlib.colormaps["Dark2"].colors)
    return [tuple(base[i % len(base)]) for i in range(n)]


def write_umap(
    features: np.ndarray,
    labels: Sequence[str],
    out_path: Path | str,
    *,
    random_state: int | None = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    class_order: Sequence[str] | None = None,
    point_size: float | None = None,
    dpi: int = 130,
) -> np.ndarray:
    """2-D UMAP of feature vectors as a scatter coloured by class, plus a CSV of the coordinates.

    Parameters
    ----------
    features : np.ndarray
        (n, d) features, e.g. the 2,048-d penultimate layer of ResNeXt-50.
    labels : sequence of str
        Class of each row.
    out_path : Path or str
        PNG to write; the coordinates go to the same path with suffix ``.csv``
        (columns ``index, label, umap1, umap2``).
    random_state : int or None
        Seed for a reproducible layout (umap-learn then runs single-threaded); ``None`` for a
        faster, parallel, non-reproducible run.
    n_neighbors, min_dist : int, float
        UMAP parameters; ``n_neighbors`` is reduced to ``n - 1`` for tiny inputs.
    class_order : sequence of str or None
        Legend (and colour) order; classes found in ``labels`` but missing here are appended in
        sorted order. Default: sorted class names.
    point_size : float or None
        Marker size; default scales down with the number of points.
    dpi : int
        Figure resolution.

    Returns
    -------
    np.ndarray
        (n, 2) embedding.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    features = np.asarray(features, dtype=np.float32)
    labels = [str(label) for label in labels]
    n = features.shape[0]
    if features.ndim != 2 or n != len(labels):
        raise ValueError(f"features must be (n, d) with one label per row: {features.shape}, {len(labels)} labels")
    if n < 3:
        raise ValueError(f"UMAP needs at least 3 points, got {n}")
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or infinity")
    import umap

    # n_neighbors must stay below n; the spectral initialisation also needs a few more points
    # than components, so tiny inputs start from a random layout instead.
    k = max(2, min(n_neighbors, n - 1))
    init = "spectral" if n > 10 else "random"
    with warnings.catch_warnings():
        # umap warns that a fixed random_state disables parallelism, and about tiny inputs.
        warnings.simplefilter("ignore", UserWarning)
        reducer = umap.UMAP(n_components=2, n_neighbors=k, min_dist=min_dist, random_state=random_state, init=init)
        emb = np.asarray(reducer.fit_transform(features), dtype=np.float64)

    present = sorted(set(labels))
    order = [c for c in (class_order or []) if c in present] + [c for c in present if c not in (class_order or [])]
    colours = dict(zip(order, _class_colours(len(order))))
    size = point_size if point_size is not None else float(np.clip(4000.0 / n, 2.0, 30.0))
    labels_arr = np.array(labels)
    fig, ax = plt.subplots(figsize=(8.5, 6.5))
    for cls in order:
        m = labels_arr == cls
        ax.scatter(emb[m, 0], emb[m, 1], s=size, color=colours[cls], label=f"{cls} ({int(m.sum())})",
                   linewidths=0, alpha=0.8)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(f"UMAP of {features.shape[1]}-d features, {n} cells")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=max(1.0, 30.0 / size) ** 0.5,
              frameon=False)
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    with out.with_suffix(".csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "label", "umap1", "umap2"])
        for i, (label, (u1, u2)) in enumerate(zip(labels, emb)):
            writer.writerow([i, label, f"{u1:.6g}", f"{u2:.6g}"])
    return emb
