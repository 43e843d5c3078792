"""SmoothGrad / Grad-CAM maps, hook hygiene, and the explanation and UMAP figures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import PIL.Image as PIL  # pillow: a dependency of the core
import torch
import torchvision as tv

# the optional ``explain`` extra (captum, grad-cam): without it this module skips, nothing else does
pytest.importorskip("captum")
pytest.importorskip("pytorch_grad_cam")

from torch import nn  # noqa: E402

from cytocompare_deep import explain, models  # noqa: E402


def _tiny_cnn(n_classes: int = 3) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, n_classes),
    )


def _inputs(b: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(1))


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


def _check_maps(maps: np.ndarray, shape: tuple[int, ...]) -> None:
    assert maps.shape == shape and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0


def test_smoothgrad_shapes_range_and_reproducible() -> None:
    model, x = _tiny_cnn(), _inputs()
    model.train()
    torch.manual_seed(0)
    a = explain.smoothgrad_maps(model, x, [0, 1, 2, 0], n_samples=6, batch_size=3)
    torch.manual_seed(0)
    b = explain.smoothgrad_maps(model, x, [0, 1, 2, 0], n_samples=6, batch_size=3)
    _check_maps(a, (4, 32, 32))
    np.testing.assert_array_equal(a, b)
    assert np.allclose(a.max(axis=(1, 2)), 1.0)
    assert model.training, "the caller's train mode is restored"
    assert x.grad is None


def test_gradcam_sequential_and_hooks_released() -> None:
    model, x = _tiny_cnn(), _inputs()
    assert models.gradcam_target_layer(model) is model[3]
    before = _hook_count(model)
    model.train()
    for _ in range(3):
        maps = explain.gradcam_maps(model, x, [0, 1, 2, 1])
        _check_maps(maps, (4, 32, 32))
    assert _hook_count(model) == before
    assert model.training


def test_gradcam_keeps_parameter_grads_and_frozen_models() -> None:
    model, x = _tiny_cnn(), _inputs()
    model(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    explain.gradcam_maps(model, x, 0)
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g)
    for p in model.parameters():
        p.requires_grad_(False)
    _check_maps(explain.gradcam_maps(model, x, 1), (4, 32, 32))
    _check_maps(explain.smoothgrad_maps(model, x, 1, n_samples=2), (4, 32, 32))


def test_gradcam_all_zero_map_has_no_nan() -> None:
    # A last layer that makes the target logit decrease with every activation: the weighted
    # sum is negative everywhere, Grad-CAM's ReLU clips it, and the map must be zeros, not NaN.
    model = _tiny_cnn()
    with torch.no_grad():
        model[-1].weight.fill_(-1.0)
    maps = explain.gradcam_maps(model, _inputs().abs(), 0, target_layer=model[5])
    _check_maps(maps, (4, 32, 32))
    assert np.all(maps == 0.0)


def test_resnet18_maps() -> None:
    torch.manual_seed(0)
    model = tv.models.resnet18(num_classes=3)
    assert models.gradcam_target_layer(model) is model.layer4[-1]
    x = _inputs(b=2, size=64)
    before = _hook_count(model)
    _check_maps(explain.gradcam_maps(model, x, [0, 2]), (2, 64, 64))
    _check_maps(explain.smoothgrad_maps(model, x, [0, 2], n_samples=3), (2, 64, 64))
    assert _hook_count(model) == before


def test_targets_must_match_batch() -> None:
    with pytest.raises(ValueError):
        explain.gradcam_maps(_tiny_cnn(), _inputs(), [0, 1])


def test_write_explanations_png(tmp_path: Path) -> None:
    model, x = _tiny_cnn(), _inputs(b=3)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(3, 50, 50, 3), dtype=np.uint8)  # display size != model size
    out = explain.write_explanations(model, images, x, ["BLA", "EOS", "LYT"], ["BLA", "LYT", "LYT"],
                                     tmp_path / "fig" / "explain.png", n_samples=3)
    with PIL.open(out) as im:
        im.verify()
    with PIL.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 300


class _FakeUMAP:
    """Stands in for umap.UMAP (whose numba JIT costs ~30 s on first use): a 2-D projection."""

    calls: list[dict] = []

    def __init__(self, **kwargs: object) -> None:
        _FakeUMAP.calls.append(kwargs)

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        return x[:, :2] - x[:, :2].mean(axis=0)


def test_write_umap_png_and_csv_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    umap = pytest.importorskip("umap")
    monkeypatch.setattr(umap, "UMAP", _FakeUMAP)
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(12, 8))
    labels = ["BLA", "EOS", "LYT"] * 4
    emb = explain.write_umap(feats, labels, tmp_path / "u.png", n_neighbors=15, random_state=3)
    assert emb.shape == (12, 2)
    assert _FakeUMAP.calls[-1]["n_neighbors"] == 11 and _FakeUMAP.calls[-1]["random_state"] == 3
    with PIL.open(tmp_path / "u.png") as im:
        assert im.format == "PNG"
    with (tmp_path / "u.csv").open() as fh:
        assert [r["label"] for r in csv.DictReader(fh)] == labels
    with pytest.raises(ValueError):
        explain.write_umap(feats[:2], labels[:2], tmp_path / "x.png")


@pytest.mark.slow
def test_write_umap_png_and_csv(tmp_path: Path) -> None:
    pytest.importorskip("umap")
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, size=(3, 16))
    labels = ["BLA", "EOS", "LYT"] * 20
    feats = np.stack([centres[i % 3] + rng.normal(0, 0.5, 16) for i in range(60)])
    emb = explain.write_umap(feats, labels, tmp_path / "umap.png", class_order=["LYT", "EOS"])
    assert emb.shape == (60, 2) and np.isfinite(emb).all()
    with PIL.open(tmp_path / "umap.png") as im:
        assert im.format == "PNG"
    with (tmp_path / "umap.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 60 and rows[1]["label"] == "EOS"
    # Fewer points than n_neighbors + 1: n_neighbors is reduced instead of failing.
    small = explain.write_umap(feats[:6], labels[:6], tmp_path / "small.png", n_neighbors=15)
    assert small.shape == (6, 2) and np.isfinite(small).all()


@pytest.mark.slow
@pytest.mark.shared_data
def test_explanations_on_real_cells(shared_data: Path, tmp_path: Path) -> None:
    """A few real Matek cells through a briefly trained CNN: both figures are written."""
    from PIL import Image

    classes = ["BLA", "EOS", "LYT"]
    root = shared_data / "matek-bm"
    paths = [(p, c) for c in classes for p in sorted((root / c).glob("*.jpg"))[:8]]
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p, _ in paths])
    y = torch.tensor([classes.index(c) for _, c in paths])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = (x - 0.5) / 0.25
    model = _tiny_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    pick = [0, 8, 16]
    explain.write_explanations(model, images[pick], x[pick], [classes[int(y[i])] for i in pick],
                               [classes[int(pred[i])] for i in pick], tmp_path / "explain.png")
    feats = model[:-1](x).detach().numpy()
    explain.write_umap(feats, [classes[int(t)] for t in y], tmp_path / "umap.png")
    assert (tmp_path / "explain.png").stat().st_size > 0 and (tmp_path / "umap.csv").exists()
