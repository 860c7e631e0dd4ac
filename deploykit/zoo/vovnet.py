"""VoVNet (Lee et al. 2019, "An Energy and GPU-Computation Efficient Backbone Network for Real-Time
Object Detection", arXiv:1904.09730): stacks of One-Shot Aggregation (OSA) modules.

An OSA module runs five 3x3 convs in sequence and concatenates its input and all five outputs only once,
at the end, before a 1x1 transition conv. Layouts follow the authors' reference implementation
(github.com/stigma0617/VoVNet.pytorch). Plain Conv-BN-ReLU, so the deploy form is just `fold_bn`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from deploykit.core.preprocess import Preprocess
from deploykit.zoo import register_model

LAYERS_PER_MODULE = 5
STEM_CHANNELS = (64, 64, 128)
STEM_STRIDES = (2, 1, 2)

_SOURCE = "Lee et al. 2019 (arXiv:1904.09730); top-1 of the reference ImageNet weights, " \
          "github.com/stigma0617/VoVNet.pytorch README. The paper reports no classification params/MACs."


@dataclass(frozen=True)
class VoVNetConfig:
    """Per stage (stages 2-5): width of the 3x3 convs, width after the transition, OSA modules."""

    stage_channels: tuple[int, ...]
    concat_channels: tuple[int, ...]
    modules_per_stage: tuple[int, ...]


CONFIGS = {
    "vovnet27_slim": VoVNetConfig((64, 80, 96, 112), (128, 256, 384, 512), (1, 1, 1, 1)),
    "vovnet39": VoVNetConfig((128, 160, 192, 224), (256, 512, 768, 1024), (1, 1, 2, 2)),
    "vovnet57": VoVNetConfig((128, 160, 192, 224), (256, 512, 768, 1024), (1, 1, 4, 3)),
}


def conv_bn_relu(in_channels: int, out_channels: int, *, kernel_size: int = 3,
                 stride: int = 1) -> nn.Sequential:
    """Conv (no bias: BN supplies it) -> BN -> ReLU with 'same' padding."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        bn=nn.BatchNorm2d(out_channels),
        act=nn.ReLU(inplace=True),
    ))


class OSAModule(nn.Module):
    """Five chained 3x3 convs; input and every output concatenated once, then a 1x1 transition.

    `residual`: the reference implementation adds the module's input back in every OSA module after
    the first of a stage (its ImageNet weights were trained that way); it costs no parameters.
    """

    def __init__(self, in_channels: int, stage_channels: int, concat_channels: int, *,
                 residual: bool) -> None:
        super().__init__()
        widths = [in_channels] + [stage_channels] * LAYERS_PER_MODULE
        self.layers = nn.ModuleList(conv_bn_relu(cin, stage_channels) for cin in widths[:-1])
        self.transition = conv_bn_relu(sum(widths), concat_channels, kernel_size=1)
        self.residual = residual and in_channels == concat_channels

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(features[-1]))
        out = self.transition(torch.cat(features, dim=1))
        return out + x if self.residual else out


def osa_stage(in_channels: int, stage_channels: int, concat_channels: int, num_modules: int, *,
              downsample: bool) -> nn.Sequential:
    """Optional 3x3/2 max-pool (ceil mode, as the reference) then `num_modules` OSA modules."""
    layers = [nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)] if downsample else []
    for index in range(num_modules):
        layers.append(OSAModule(in_channels if index == 0 else concat_channels, stage_channels,
                                concat_channels, residual=index > 0))
    return nn.Sequential(*layers)


def _stem() -> nn.Sequential:
    widths = (3, *STEM_CHANNELS)
    return nn.Sequential(*(conv_bn_relu(cin, cout, stride=s)
                           for cin, cout, s in zip(widths, widths[1:], STEM_STRIDES)))


class VoVNet(nn.Module):
    """Stem (stride 4), four OSA stages (stage 2 keeps resolution, 3-5 halve it), pool, linear."""

    def __init__(self, config: VoVNetConfig, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = _stem()
        in_channels = STEM_CHANNELS[-1]
        stages = []
        for index, (stage_ch, concat_ch, count) in enumerate(
                zip(config.stage_channels, config.concat_channels, config.modules_per_stage)):
            stages.append(osa_stage(in_channels, stage_ch, concat_ch, count, downsample=index > 0))
            in_channels = concat_ch
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        x = self.pool(self.stages(self.stem(x)))
        return self.classifier(x.flatten(1))


@register_model("vovnet27_slim", preprocess=Preprocess(), paper={"source": _SOURCE})
def vovnet27_slim(num_classes: int = 1000) -> VoVNet:
    return VoVNet(CONFIGS["vovnet27_slim"], num_classes)


@register_model("vovnet39", preprocess=Preprocess(), paper={"top1": 76.77, "source": _SOURCE})
def vovnet39(num_classes: int = 1000) -> VoVNet:
    return VoVNet(CONFIGS["vovnet39"], num_classes)


@register_model("vovnet57", preprocess=Preprocess(), paper={"top1": 77.73, "source": _SOURCE})
def vovnet57(num_classes: int = 1000) -> VoVNet:
    return VoVNet(CONFIGS["vovnet57"], num_classes)
