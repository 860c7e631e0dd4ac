"""MobileNet v1 (Howard et al. 2017, arXiv:1704.04861): a 3x3 stem, then 13 depthwise-separable blocks.

Plain Conv-BN-ReLU throughout, so the deploy form is just `fold_bn`. The width multiplier `width` (the
paper's alpha) thins every layer; the resolution multiplier is simply the input size, since global
average pooling accepts any resolution.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from deploykit.core.preprocess import Preprocess
from deploykit.zoo import register_model

STEM_CHANNELS = 32
# (output channels, stride) of the 13 depthwise-separable blocks, paper Table 1.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
# The reference TF-slim implementation never thins a layer below 8 channels.
MIN_CHANNELS = 8

_SOURCE = "Howard et al. 2017, MobileNets (arXiv:1704.04861), Tables 6 and 7"
# Paper Table 7: mult-adds of the 1.0 model at smaller input resolutions.
_MACS_BY_RESOLUTION = {224: 569, 192: 418, 160: 290, 128: 186}


def conv_bn_relu(in_channels: int, out_channels: int, *, kernel_size: int, stride: int = 1,
                 groups: int = 1) -> nn.Sequential:
    """Conv (no bias: BN supplies it) -> BN -> ReLU, with 'same' padding for odd kernels."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                       groups=groups, bias=False),
        bn=nn.BatchNorm2d(out_channels),
        act=nn.ReLU(inplace=True),
    ))


def depthwise_separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """A 3x3 depthwise conv (spatial filtering) then a 1x1 pointwise conv (channel mixing)."""
    return nn.Sequential(OrderedDict(
        depthwise=conv_bn_relu(in_channels, in_channels, kernel_size=3, stride=stride, groups=in_channels),
        pointwise=conv_bn_relu(in_channels, out_channels, kernel_size=1),
    ))


def scaled_channels(channels: int, width: float) -> int:
    return max(int(channels * width), MIN_CHANNELS)


class MobileNetV1(nn.Module):
    """MobileNet v1 at width multiplier `width`."""

    def __init__(self, num_classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width multiplier must be positive, got {width}")
        channels = scaled_channels(STEM_CHANNELS, width)
        layers = [conv_bn_relu(3, channels, kernel_size=3, stride=2)]
        for out_channels, stride in BLOCKS:
            out_channels = scaled_channels(out_channels, width)
            layers.append(depthwise_separable(channels, out_channels, stride))
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.classifier(x.flatten(1))


def _paper(params_m: float, macs_m: float, **extra) -> dict:
    return {"params_m": params_m, "macs_m": macs_m, "source": _SOURCE, **extra}


@register_model("mobilenet_v1", preprocess=Preprocess(),
                paper=_paper(4.2, 569, top1=70.6, macs_m_by_resolution=_MACS_BY_RESOLUTION))
def mobilenet_v1(num_classes: int = 1000, width: float = 1.0) -> MobileNetV1:
    return MobileNetV1(num_classes, width)


@register_model("mobilenet_v1_075", preprocess=Preprocess(), paper=_paper(2.6, 325, top1=68.4))
def mobilenet_v1_075(num_classes: int = 1000) -> MobileNetV1:
    return MobileNetV1(num_classes, width=0.75)


@register_model("mobilenet_v1_050", preprocess=Preprocess(), paper=_paper(1.3, 149, top1=63.7))
def mobilenet_v1_050(num_classes: int = 1000) -> MobileNetV1:
    return MobileNetV1(num_classes, width=0.5)


@register_model("mobilenet_v1_025", preprocess=Preprocess(), paper=_paper(0.5, 41, top1=50.6))
def mobilenet_v1_025(num_classes: int = 1000) -> MobileNetV1:
    return MobileNetV1(num_classes, width=0.25)
