"""Pieces shared by the re-parameterizable families (MobileOne, RepVGG).

A multi-branch block describes itself to `deploykit.passes.reparameterize` through two methods,
`reparam_branches()` and `reparam_rebuild(conv)`; the folding math lives only in `deploykit.passes.fold`.
The helpers here build branches in the shape that pass understands: a Sequential with `conv` and `bn`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
            groups: int = 1) -> nn.Sequential:
    """Conv (no bias: the BN after it supplies one) -> BN; the child names match the reference repos."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
        bn=nn.BatchNorm2d(out_channels),
    ))


def sum_of_branches(branches: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """The training-time body of every block: parallel branches on the same input, summed.

    Reading the branch list from `reparam_branches()` keeps forward and folding describing one graph.
    """
    out = branches[0](x)
    for branch in branches[1:]:
        out = out + branch(x)
    return out


class SEBlock(nn.Module):
    """Squeeze-and-excitation as in MobileOne's reference: 1x1 conv reduce -> ReLU -> 1x1 conv expand ->
    sigmoid on the globally averaged input, then a per-channel rescale of the input.

    Its convs are not part of any branch sum, so the reparameterize pass leaves them alone.
    """

    def __init__(self, channels: int, reduction_ratio: float = 0.0625) -> None:
        super().__init__()
        hidden = int(channels * reduction_ratio)
        self.reduce = nn.Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.expand = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A mean over H, W (not avg_pool2d with a shape-derived kernel) exports with dynamic input sizes.
        gate = torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return x * gate


# --- CIFAR-10 variants of the ImageNet families ---------------------------------------------------------
# Same blocks, widths and depths as the ImageNet model; only the stem stops striding, so a 32x32 image
# ends as a 2x2 map (overall stride 16) instead of 1x1. The usual CIFAR surgery (stride-1 stem and also
# one stride-2 stage fewer, overall stride 8) quadruples the MACs of every stage: measured on this
# machine's one core, MobileOne-S0 then trains at 16 images/s (52 min an epoch) against 100 images/s
# with stride 16, which is what fits a CPU training budget. Mean/std: the CIFAR-10 training set's.
CIFAR_STRIDES = (1, 2, 2, 2, 2)  # stem, stage 1..4
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def cifar10_preprocess():
    from deploykit.core.preprocess import Preprocess

    return Preprocess(input_size=32, resize=None, mean=CIFAR10_MEAN, std=CIFAR10_STD)


def trained_weights(name: str):
    """Where deploykit's own trained checkpoint of zoo model `name` lives: `<repo>/weights/<name>.safetensors`
    (reproduced by the command in that folder's README)."""
    from deploykit.core.paths import project_root

    return project_root() / "weights" / f"{name}.safetensors"


# The stage widths both families scale (their `widths` multipliers), and the stem's cap.
BASE_WIDTHS = (64, 128, 256, 512)
STEM_MAX_CHANNELS = 64


def stage_widths(multipliers: tuple[float, ...]) -> list[int]:
    return [int(base * m) for base, m in zip(BASE_WIDTHS, multipliers)]


class StagedNet(nn.Module):
    """Stem (`stage0`), four stages (`stage1`..`stage4`), global average pool, linear classifier: the body of
    MobileOne and RepVGG, whose checkpoints use these names. Submodules are built by the caller, in order."""

    def __init__(self, stem: nn.Module, stages: list[nn.Module], channels: int, num_classes: int) -> None:
        super().__init__()
        self.stage0 = stem
        for index, stage in enumerate(stages, 1):
            self.add_module(f"stage{index}", stage)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index in range(5):
            x = getattr(self, f"stage{index}")(x)
        return self.linear(self.gap(x).flatten(1))
