"""MobileOne (Vasu et al. 2023, "MobileOne: An Improved One millisecond Mobile Backbone",
arXiv:2206.04040): a MobileNet-style stack of depthwise 3x3 and pointwise 1x1 convs, each trained as a
sum of over-parameterized conv-BN branches and folded into one conv for deployment.

Layout and attribute names follow the authors' reference (github.com/apple/ml-mobileone, mobileone.py),
so its checkpoints map onto these modules: blocks hold `rbr_conv`, `rbr_scale`, `rbr_skip`, `se`,
`activation`; the network holds `stage0` (stem) .. `stage4`, `gap`, `linear`. After the reparameterize
pass a block becomes `reparam_conv` (+ `se`) + `activation`, the names of the reference's fused form.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import nn

from deploykit.zoo import register_model
from deploykit.zoo.blocks import (CIFAR_STRIDES, STEM_MAX_CHANNELS, SEBlock, StagedNet, cifar10_preprocess, conv_bn,
                                  stage_widths, sum_of_branches, trained_weights)
from deploykit.zoo.layouts import MOBILEONE_LAYOUTS

# Every MobileOne loads the reference repo's and timm's checkpoints, fused or not (zoo/layouts.py).
register_model = partial(register_model, layouts=MOBILEONE_LAYOUTS)

BLOCKS_PER_STAGE = (2, 8, 10, 1)

_SOURCE = "Vasu et al. 2023, MobileOne (arXiv:2206.04040); top-1 from github.com/apple/ml-mobileone README"


@dataclass(frozen=True)
class MobileOneConfig:
    """Width multiplier per stage, conv branches per block (k in the paper), SE blocks per stage.

    SE blocks are the last `se_blocks[i]` of stage i+1; the reference gives S4 SE in the second half of
    stage 3 and all of stage 4.
    """

    widths: tuple[float, float, float, float]
    num_conv_branches: int = 1
    se_blocks: tuple[int, int, int, int] = (0, 0, 0, 0)
    strides: tuple[int, int, int, int, int] = (2, 2, 2, 2, 2)  # stem, stage 1..4 (see `cifar_variant`)


CONFIGS = {
    "s0": MobileOneConfig((0.75, 1.0, 1.0, 2.0), num_conv_branches=4),
    "s1": MobileOneConfig((1.5, 1.5, 2.0, 2.5)),
    "s2": MobileOneConfig((1.5, 2.0, 2.5, 4.0)),
    "s3": MobileOneConfig((2.0, 2.5, 3.0, 4.0)),
    "s4": MobileOneConfig((3.0, 3.5, 3.5, 4.0), se_blocks=(0, 0, BLOCKS_PER_STAGE[2] // 2, BLOCKS_PER_STAGE[3])),
}


class MobileOneBlock(nn.Module):
    """Training form: `num_conv_branches` conv-BN branches, plus a 1x1 conv-BN "scale" branch when the
    kernel is bigger than 1x1, plus a BN "skip" branch when the output can be the input (same channels,
    stride 1); summed, then SE (optional) and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 groups: int = 1, use_se: bool = False, num_conv_branches: int = 1) -> None:
        super().__init__()
        self.se = SEBlock(out_channels) if use_se else nn.Identity()
        self.activation = nn.ReLU()
        self.rbr_skip = nn.BatchNorm2d(in_channels) if in_channels == out_channels and stride == 1 else None
        self.rbr_conv = nn.ModuleList(
            conv_bn(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups)
            for _ in range(num_conv_branches))
        self.rbr_scale = None
        if kernel_size > 1:
            self.rbr_scale = conv_bn(in_channels, out_channels, 1, stride=stride, groups=groups)

    def reparam_branches(self) -> list[nn.Module]:
        # The k conv branches come first: the fused conv takes its geometry from the first largest kernel.
        optional = [b for b in (self.rbr_scale, self.rbr_skip) if b is not None]
        return [*self.rbr_conv, *optional]

    def reparam_rebuild(self, conv: nn.Conv2d) -> nn.Sequential:
        layers = OrderedDict(reparam_conv=conv)
        if not isinstance(self.se, nn.Identity):
            layers["se"] = self.se
        layers["activation"] = self.activation
        return nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.se(sum_of_branches(self.reparam_branches(), x)))


def mobileone_stage(in_channels: int, out_channels: int, num_blocks: int, *, num_se_blocks: int,
                    num_conv_branches: int, stride: int = 2) -> nn.Sequential:
    """`num_blocks` depthwise-3x3 + pointwise-1x1 pairs; the first pair strides by `stride`, the last
    `num_se_blocks` pairs carry SE (on both of their convs, as in the reference)."""
    if num_se_blocks > num_blocks:
        raise ValueError(f"{num_se_blocks} SE blocks do not fit in a stage of {num_blocks}")
    layers = []
    for index in range(num_blocks):
        options = {"use_se": index >= num_blocks - num_se_blocks, "num_conv_branches": num_conv_branches}
        layers.append(MobileOneBlock(in_channels, in_channels, 3, stride=stride if index == 0 else 1,
                                     groups=in_channels, **options))
        layers.append(MobileOneBlock(in_channels, out_channels, 1, **options))
        in_channels = out_channels
    return nn.Sequential(*layers)


class MobileOne(StagedNet):
    """Stem (one 3x3 block, stride 2 on ImageNet), four stages, global average pool, linear classifier."""

    def __init__(self, config: MobileOneConfig, num_classes: int = 1000) -> None:
        widths = stage_widths(config.widths)
        channels = min(STEM_MAX_CHANNELS, widths[0])
        # The reference builds the stem with a single conv branch even for S0, and never with SE.
        stem = MobileOneBlock(3, channels, 3, stride=config.strides[0])
        stages = []
        for width, blocks, se_blocks, stride in zip(widths, BLOCKS_PER_STAGE, config.se_blocks, config.strides[1:]):
            stages.append(mobileone_stage(channels, width, blocks, num_se_blocks=se_blocks,
                                          num_conv_branches=config.num_conv_branches, stride=stride))
            channels = width
        super().__init__(stem, stages, channels, num_classes)


def _paper(params_m: float, macs_m: float, top1: float) -> dict:
    return {"params_m": params_m, "macs_m": macs_m, "top1": top1, "source": _SOURCE}


@register_model("mobileone_s0", paper=_paper(2.1, 275, 71.4))
def mobileone_s0(num_classes: int = 1000) -> MobileOne:
    return MobileOne(CONFIGS["s0"], num_classes)


@register_model("mobileone_s1", paper=_paper(4.8, 825, 75.9))
def mobileone_s1(num_classes: int = 1000) -> MobileOne:
    return MobileOne(CONFIGS["s1"], num_classes)


@register_model("mobileone_s2", paper=_paper(7.8, 1299, 77.4))
def mobileone_s2(num_classes: int = 1000) -> MobileOne:
    return MobileOne(CONFIGS["s2"], num_classes)


@register_model("mobileone_s3", paper=_paper(10.1, 1896, 78.1))
def mobileone_s3(num_classes: int = 1000) -> MobileOne:
    return MobileOne(CONFIGS["s3"], num_classes)


@register_model("mobileone_s4", paper=_paper(14.8, 2978, 79.4))
def mobileone_s4(num_classes: int = 1000) -> MobileOne:
    return MobileOne(CONFIGS["s4"], num_classes)


@register_model("mobileone_s0_cifar", num_classes=10, preprocess=cifar10_preprocess(),
                default_weights=partial(trained_weights, "mobileone_s0_cifar"),
                paper={"source": "S0 blocks and widths, stride-1 stem for 32x32 (deploykit.zoo.blocks.CIFAR_STRIDES)"})
def mobileone_s0_cifar(num_classes: int = 10) -> MobileOne:
    return MobileOne(replace(CONFIGS["s0"], strides=CIFAR_STRIDES), num_classes)
