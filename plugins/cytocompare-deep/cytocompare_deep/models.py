"""The two networks of Matek et al. 2021 and access to their penultimate features.

* :func:`resnext50` -- torchvision ``resnext50_32x4d`` (cardinality 32, bottleneck width 4),
  randomly initialised (trained from scratch, as in the paper). ``width="tiny"`` builds the same
  ResNet/Bottleneck class with one block per stage and 4 groups of width 4, so CPU tests run the
  identical code path (grouped convolutions, 2,048-d penultimate features) in seconds.
* :func:`sequential_cnn` -- a plain ``nn.Sequential`` of about 304k parameters. The paper reports
  303,694 parameters but never published the layer list; ours is a documented stand-in (see
  ``docs/deep.md``), *not* the authors' network. Global average pooling makes the parameter count
  independent of the input size.

:func:`penultimate` returns the features that feed the last linear layer (2,048-d for
ResNeXt-50, ``hidden``-d for the sequential CNN), e.g. for UMAP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: the paper's parameter count for its sequential model (250x250x3 input, 21 classes)
PAPER_SEQUENTIAL_PARAMS = 303_694

#: default layer list of the sequential CNN: conv widths, one 2x2 max-pool after each but the last
SEQUENTIAL_CHANNELS: tuple[int, ...] = (16, 32, 64, 128, 128)
SEQUENTIAL_HIDDEN = 384


def resnext50(num_classes: int, width: str = "full") -> nn.Module:
    """ResNeXt-50 (32x4d) from scratch; ``width="tiny"`` for CPU tests (same class, ~1 block/stage)."""
    from torchvision.models import ResNet, resnext50_32x4d
    from torchvision.models.resnet import Bottleneck

    if width == "full":
        return resnext50_32x4d(weights=None, num_classes=num_classes)
    if width == "tiny":
        return ResNet(Bottleneck, [1, 1, 1, 1], num_classes=num_classes, groups=4, width_per_group=4)
    raise ValueError(f"width must be 'full' or 'tiny', got {width!r}")


def sequential_cnn(
    num_classes: int,
    channels: Sequence[int] = SEQUENTIAL_CHANNELS,
    hidden: int = SEQUENTIAL_HIDDEN,
    dropout: float = 0.3,
) -> nn.Sequential:
    """A small VGG-style ``nn.Sequential``; 303,013 parameters for 21 classes (any input size).

    Layer list (defaults)::

        for c in (16, 32, 64, 128):  Conv3x3(c, pad 1, no bias) -> BatchNorm -> ReLU -> MaxPool 2x2
        Conv3x3(128, pad 1, no bias) -> BatchNorm -> ReLU
        AdaptiveAvgPool(1) -> Flatten -> Linear(128, 384) -> ReLU -> Dropout(0.3)   # penultimate: 384-d
        Linear(384, num_classes)

    The final ``Linear`` is always the last module, so ``model[:-1]`` gives the penultimate
    features.
    """
    layers: list[nn.Module] = []
    cin = 3
    for i, c in enumerate(channels):
        layers += [nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        if i < len(channels) - 1:
            layers.append(nn.MaxPool2d(2))
        cin = c
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(cin, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    ]
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def build(model_name: str, num_classes: int, width: str = "full") -> nn.Module:
    """``"resnext50"`` or ``"sequential-cnn"`` by name (used by checkpoints and pickling)."""
    if model_name == "resnext50":
        return resnext50(num_classes, width=width)
    if model_name == "sequential-cnn":
        return sequential_cnn(num_classes)
    raise ValueError(f"unknown model {model_name!r}; expected 'resnext50' or 'sequential-cnn'")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Features feeding the final linear layer: (B, 2048) for ResNeXt-50, (B, hidden) for the CNN."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper
    from torchvision.models import ResNet

    if isinstance(model, ResNet):
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
        return torch.flatten(model.avgpool(x), 1)
    if isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Linear):
        return model[:-1](x)
    raise TypeError(f"penultimate() does not know {type(model).__name__}")


def gradcam_target_layer(model: nn.Module) -> nn.Module:
    """The layer whose activations Grad-CAM uses (the one home of that choice): the last
    convolutional stage.

    torchvision ResNet / ResNeXt (anything with a non-empty ``layer4`` Sequential):
    ``model.layer4[-1]``, the last bottleneck block. Any other model, e.g. the sequential CNN:
    the last ``nn.Conv2d`` in registration order (its output is the finest-grained map that still
    has the most semantic channels; the BN / ReLU after it only rescale and clip it). A
    ``torch.compile`` wrapper is looked through.
    """
    model = getattr(model, "_orig_mod", model)
    layer4 = getattr(model, "layer4", None)
    if isinstance(layer4, nn.Sequential) and len(layer4) > 0:
        return layer4[-1]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"no Conv2d in {type(model).__name__}: pass target_layer explicitly")
    return convs[-1]
