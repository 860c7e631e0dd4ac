"""CIFAR-10 ResNets (He et al. 2015, "Deep Residual Learning", section 4.2): 6n+2 layers.

A 3x3 stem of 16 channels, three stages of n BasicBlocks (16, 32, 64 channels; stride 2 entering stages 2
and 3), global average pooling, one linear layer. Module names match the checkpoints of
github.com/akamaster/pytorch_resnet_cifar10 so they load without renaming.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch.nn.functional as F
from torch import nn

from deploykit.core.errors import DeployKitError
from deploykit.core.paths import data_dir
from deploykit.core.preprocess import Preprocess
from deploykit.zoo import MODELS, load_weights, register_model
from deploykit.zoo.layouts import Layout

STAGE_WIDTHS = (16, 32, 64)
BLOCKS_PER_STAGE = {"resnet20_cifar": 3, "resnet32_cifar": 5, "resnet44_cifar": 7, "resnet56_cifar": 9}

# The released checkpoints, relative to `deploykit.core.paths.data_dir()`.
DEFAULT_WEIGHTS = {
    "resnet20_cifar": "weights/cifar10_resnet/resnet20-12fca82f.th",
    "resnet32_cifar": "weights/cifar10_resnet/resnet32-d509ac18.th",
    "resnet44_cifar": "weights/cifar10_resnet/resnet44-014dd654.th",
    "resnet56_cifar": "weights/cifar10_resnet/resnet56-4bfd9763.th",
}

# The checkpoints were trained on 32x32 images normalised with the ImageNet statistics; no resize.
CIFAR_PREPROCESS = Preprocess(input_size=32, resize=None, mean=(0.485, 0.456, 0.406),
                              std=(0.229, 0.224, 0.225))

_SOURCE = ("params: He et al. 2015 (arXiv:1512.03385) Table 6; top1: lossless CIFAR-10 test set, "
           "github.com/akamaster/pytorch_resnet_cifar10 README")
_PAPER = {
    "resnet20_cifar": {"params_m": 0.27, "top1": 91.73},
    "resnet32_cifar": {"params_m": 0.46, "top1": 92.63},
    "resnet44_cifar": {"params_m": 0.66, "top1": 93.10},
    "resnet56_cifar": {"params_m": 0.85, "top1": 93.39},
}


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; the shortcut is "option A" when the shape changes:
    subsample every second pixel and zero-pad the new channels, which adds no parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def shortcut(self, x):
        if self.stride == 1 and self.extra_channels == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        half = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = conv3x3(3, STAGE_WIDTHS[0])
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        in_channels = STAGE_WIDTHS[0]
        for index, width in enumerate(STAGE_WIDTHS):
            stride = 1 if index == 0 else 2
            blocks = [BasicBlock(in_channels, width, stride)]
            blocks += [BasicBlock(width, width) for _ in range(blocks_per_stage - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            in_channels = width
        self.linear = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def prune_fixed_layers(self) -> list[nn.Module]:
        """For `passes.prune`: the layers writing the residual streams keep their widths, because the
        option-A shortcut maps stream channels into the next stage with an offset (zero padding) that
        dependency tracking cannot follow. Block-internal channels (conv1/bn1) stay prunable."""
        blocks = [b for stage in (self.layer1, self.layer2, self.layer3) for b in stage]
        return [self.conv1, self.bn1, *(m for b in blocks for m in (b.conv2, b.bn2))]


def default_weights_path(name: str) -> Path:
    """Where the released checkpoint of `name` lives in the shared data directory."""
    if name not in DEFAULT_WEIGHTS:
        raise DeployKitError(f"no default weights for {name!r}",
                             fix=f"use one of {', '.join(DEFAULT_WEIGHTS)}, or pass a weights path")
    return data_dir() / DEFAULT_WEIGHTS[name]


def load_pretrained(name: str, path: Path | None = None) -> CifarResNet:
    """Model `name` with its released CIFAR-10 weights (or those at `path`), in eval mode."""
    return load_weights(name, MODELS.get(name).builder(), path).model


AKAMASTER_LAYOUTS = (Layout("akamaster/pytorch_resnet_cifar10 (our names)"),)


def _register(name: str):
    paper = {**_PAPER[name], "source": _SOURCE}
    return register_model(name, num_classes=10, preprocess=CIFAR_PREPROCESS, paper=paper,
                          layouts=AKAMASTER_LAYOUTS, default_weights=partial(default_weights_path, name))


@_register("resnet20_cifar")
def resnet20_cifar(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(BLOCKS_PER_STAGE["resnet20_cifar"], num_classes)


@_register("resnet32_cifar")
def resnet32_cifar(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(BLOCKS_PER_STAGE["resnet32_cifar"], num_classes)


@_register("resnet44_cifar")
def resnet44_cifar(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(BLOCKS_PER_STAGE["resnet44_cifar"], num_classes)


@_register("resnet56_cifar")
def resnet56_cifar(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(BLOCKS_PER_STAGE["resnet56_cifar"], num_classes)

