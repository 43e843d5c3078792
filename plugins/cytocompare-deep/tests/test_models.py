"""Model shapes, parameter counts and the CPU code paths (channels_last, bf16 autocast)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cytocompare_deep import models


def test_sequential_cnn_parameter_count_is_about_the_papers():
    m = models.sequential_cnn(21)
    n = models.count_parameters(m)
    print(f"sequential CNN, 21 classes: {n:,} parameters (paper: {models.PAPER_SEQUENTIAL_PARAMS:,})")
    assert 300_000 <= n <= 310_000
    assert abs(n - models.PAPER_SEQUENTIAL_PARAMS) / models.PAPER_SEQUENTIAL_PARAMS < 0.01
    assert isinstance(m, nn.Sequential) and isinstance(m[-1], nn.Linear)


def test_sequential_cnn_works_at_any_input_size_with_the_same_count():
    m = models.sequential_cnn(21).eval()
    with torch.no_grad():
        assert m(torch.rand(1, 3, 250, 250)).shape == (1, 21)
        assert m(torch.rand(2, 3, 32, 32)).shape == (2, 21)
        assert models.penultimate(m, torch.rand(2, 3, 32, 32)).shape == (2, models.SEQUENTIAL_HIDDEN)


def test_resnext50_full_is_32x4d_with_2048_features():
    m = models.resnext50(21).eval()
    block = m.layer1[0]
    assert block.conv2.groups == 32
    assert block.conv2.in_channels == 128  # 32 groups x width 4 x (64/64)
    assert m.fc.in_features == 2048 and m.fc.out_features == 21
    n = models.count_parameters(m)
    print(f"ResNeXt-50 32x4d, 21 classes: {n:,} parameters")
    assert 22_900_000 < n < 23_100_000
    with torch.no_grad():
        f = models.penultimate(m, torch.rand(1, 3, 64, 64))
        logits = m(torch.rand(1, 3, 64, 64))
    assert f.shape == (1, 2048) and logits.shape == (1, 21)


def test_resnext_penultimate_matches_fc_input():
    m = models.resnext50(3, width="tiny").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        f = models.penultimate(m, x)
        assert f.shape == (2, 2048)
        torch.testing.assert_close(m.fc(f), m(x))
    assert m.layer1[0].conv2.groups == 4
    assert models.gradcam_target_layer(m) is m.layer4[-1]


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="width"):
        models.resnext50(3, width="huge")
    with pytest.raises(ValueError, match="unknown model"):
        models.build("vgg", 3)
    with pytest.raises(TypeError):
        models.penultimate(nn.Linear(3, 3), torch.rand(1, 3))


@pytest.mark.parametrize("name", ["resnext50", "sequential-cnn"])
def test_channels_last_and_bf16_autocast_run_on_cpu(name):
    m = models.build(name, 3, width="tiny").to(memory_format=torch.channels_last)
    x = torch.rand(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    loss = nn.functional.cross_entropy(out.float(), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
