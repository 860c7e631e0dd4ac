"""RepVGG (Ding et al. 2021, "RepVGG: Making VGG-style ConvNets Great Again", CVPR 2021,
arXiv:2101.03697): a plain stack of 3x3 conv + ReLU at deploy time, trained as 3x3 conv-BN + 1x1 conv-BN
+ BN identity branches summed.

Layout and attribute names follow the authors' reference (github.com/DingXiaoH/RepVGG, repvgg.py), so its
checkpoints map onto these modules: blocks hold `rbr_dense`, `rbr_1x1`, `rbr_identity`, `nonlinearity`;
the network holds `stage0` (stem) .. `stage4`, `gap`, `linear`. After the reparameterize pass a block
becomes `rbr_reparam` + `nonlinearity`, the names of the reference's deploy form. Only the dense
(groups=1) variants are built; the paper's g2/g4 group-wise variants are not.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import nn

from deploykit.zoo import register_model
from deploykit.zoo.blocks import (CIFAR_STRIDES, STEM_MAX_CHANNELS, StagedNet, cifar10_preprocess, conv_bn, stage_widths,
                                  sum_of_branches, trained_weights)
from deploykit.zoo.layouts import REPVGG_LAYOUTS

# Every RepVGG loads the reference repo's and timm's checkpoints, fused or not (zoo/layouts.py).
register_model = partial(register_model, layouts=REPVGG_LAYOUTS)


_SOURCE = "Ding et al. 2021, RepVGG (CVPR 2021, arXiv:2101.03697), Table 4"


@dataclass(frozen=True)
class RepVGGConfig:
    """Blocks per stage (the paper's A or B depth) and width multipliers (the paper's a, a, a, b)."""

    blocks_per_stage: tuple[int, int, int, int]
    widths: tuple[float, float, float, float]
    strides: tuple[int, int, int, int, int] = (2, 2, 2, 2, 2)  # stem, stage 1..4 (see `cifar_variant`)


DEPTH_A = (2, 4, 14, 1)
DEPTH_B = (4, 6, 16, 1)

CONFIGS = {
    "a0": RepVGGConfig(DEPTH_A, (0.75, 0.75, 0.75, 2.5)),
    "a1": RepVGGConfig(DEPTH_A, (1.0, 1.0, 1.0, 2.5)),
    "a2": RepVGGConfig(DEPTH_A, (1.5, 1.5, 1.5, 2.75)),
    "b0": RepVGGConfig(DEPTH_B, (1.0, 1.0, 1.0, 2.5)),
    "b1": RepVGGConfig(DEPTH_B, (2.0, 2.0, 2.0, 4.0)),
    "b2": RepVGGConfig(DEPTH_B, (2.5, 2.5, 2.5, 5.0)),
    "b3": RepVGGConfig(DEPTH_B, (3.0, 3.0, 3.0, 5.0)),
}


class RepVGGBlock(nn.Module):
    """Training form: 3x3 conv-BN + 1x1 conv-BN (+ BN identity when the shapes allow), summed, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__()
        self.nonlinearity = nn.ReLU()
        self.rbr_identity = nn.BatchNorm2d(in_channels) if in_channels == out_channels and stride == 1 else None
        self.rbr_dense = conv_bn(in_channels, out_channels, 3, stride=stride, padding=1)
        self.rbr_1x1 = conv_bn(in_channels, out_channels, 1, stride=stride, padding=0)

    def reparam_branches(self) -> list[nn.Module]:
        branches = [self.rbr_dense, self.rbr_1x1]
        return branches if self.rbr_identity is None else [*branches, self.rbr_identity]

    def reparam_rebuild(self, conv: nn.Conv2d) -> nn.Sequential:
        return nn.Sequential(OrderedDict(rbr_reparam=conv, nonlinearity=self.nonlinearity))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinearity(sum_of_branches(self.reparam_branches(), x))


def repvgg_stage(in_channels: int, out_channels: int, num_blocks: int, stride: int = 2) -> nn.Sequential:
    """`num_blocks` RepVGG blocks; the first strides (RepVGG has no pooling layers)."""
    blocks = [RepVGGBlock(in_channels, out_channels, stride=stride)]
    blocks += [RepVGGBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class RepVGG(StagedNet):
    """Stem (one block, stride 2 on ImageNet), four stages, global average pool, linear classifier."""

    def __init__(self, config: RepVGGConfig, num_classes: int = 1000) -> None:
        widths = stage_widths(config.widths)
        channels = min(STEM_MAX_CHANNELS, widths[0])
        stem = RepVGGBlock(3, channels, stride=config.strides[0])
        stages = []
        for width, blocks, stride in zip(widths, config.blocks_per_stage, config.strides[1:]):
            stages.append(repvgg_stage(channels, width, blocks, stride))
            channels = width
        super().__init__(stem, stages, channels, num_classes)


def _paper(params_m: float, gmacs: float) -> dict:
    return {"params_m": params_m, "macs_m": round(gmacs * 1000), "source": _SOURCE}


@register_model("repvgg_a0", paper=_paper(8.30, 1.4))
def repvgg_a0(num_classes: int = 1000) -> RepVGG:
    return RepVGG(CONFIGS["a0"], num_classes)


@register_model("repvgg_a1", paper=_paper(12.78, 2.4))
def repvgg_a1(num_classes: int = 1000) -> RepVGG:
    return RepVGG(CONFIGS["a1"], num_classes)


@register_model("repvgg_a2", paper=_paper(25.49, 5.1))
def repvgg_a2(num_classes: int = 1000) -> RepVGG:
    return RepVGG(CONFIGS["a2"], num_classes)


@register_model("repvgg_b0", paper=_paper(14.33, 3.1))
def repvgg_b0(num_classes: int = 1000) -> RepVGG:
    return RepVGG(CONFIGS["b0"], num_classes)


@register_model("repvgg_b1", paper=_paper(51.82, 11.8))
def repvgg_b1(num_classes: int = 1000) -> RepVGG:
    return RepVGG(CONFIGS["b1"], num_classes)


@register_model("repvgg_b2", paper=_paper(80.31, 18.4))
def repvgg_b2(num_classes: int = 1000) -> RepVGG:
    return RepVGG(CONFIGS["b2"], num_classes)


@register_model("repvgg_b3", paper=_paper(110.96, 26.2))
def repvgg_b3(num_classes: int = 1000) -> RepVGG:
    return RepVGG(CONFIGS["b3"], num_classes)


@register_model("repvgg_a0_cifar", num_classes=10, preprocess=cifar10_preprocess(),
                default_weights=partial(trained_weights, "repvgg_a0_cifar"),
                paper={"source": "A0 blocks and widths, stride-1 stem for 32x32 (deploykit.zoo.blocks.CIFAR_STRIDES)"})
def repvgg_a0_cifar(num_classes: int = 10) -> RepVGG:
    return RepVGG(replace(CONFIGS["a0"], strides=CIFAR_STRIDES), num_classes)
