"""Models deploykit has never seen, written the way users write them (their own names, their own forward),
for the generic reparameterize pass; the factories are `--model-from` targets
(`tests.passes.graph_models:rep_net`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import randomize_bn


def _conv(cin, cout, k, stride=1, groups=1, bias=False):
    pad = (k[0] // 2, k[1] // 2) if isinstance(k, tuple) else k // 2
    return nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=bias)


class RepLike(nn.Module):
    """RepVGG in other words: 3x3 conv-BN + BN skip + 1x1 conv-BN, summed inline, then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.k3, self.k3_norm = _conv(channels, channels, 3), nn.BatchNorm2d(channels)
        self.k1, self.k1_norm = _conv(channels, channels, 1), nn.BatchNorm2d(channels)
        self.skip_bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(self.k3_norm(self.k3(x)) + self.skip_bn(x) + self.k1_norm(self.k1(x)))


class ACBlock(nn.Module):
    """ACNet: square 3x3, horizontal 1x3 and vertical 3x1 conv-BN, summed with torch.add."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.square = nn.Sequential(_conv(cin, cout, 3, stride), nn.BatchNorm2d(cout))
        self.hor = nn.Sequential(_conv(cin, cout, (1, 3), stride), nn.BatchNorm2d(cout))
        self.ver = nn.Sequential(_conv(cin, cout, (3, 1), stride), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.add(torch.add(self.square(x), self.hor(x)), self.ver(x))


class DBBLite(nn.Module):
    """A Diverse-Branch-Block-like unit: 3x3 conv-BN, 1x1 conv, a learnt per-channel scale, the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dense = nn.Sequential(_conv(channels, channels, 3), nn.BatchNorm2d(channels))
        self.point = _conv(channels, channels, 1, bias=True)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, channels).reshape(1, channels, 1, 1))

    def forward(self, x):
        return F.silu(sum([self.dense(x), self.point(x), x * self.gamma, x]))


class RepNet(nn.Module):
    """A small classifier of the three blocks, chained, behind a conv-BN-ReLU stem."""

    def __init__(self, width: int = 8, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(3, width, 3, 2), nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(RepLike(width), ACBlock(width, width), RepLike(width), DBBLite(width),
                                  ACBlock(width, 2 * width, stride=2))
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


class BasicBlock(nn.Module):
    """ResNet: x + conv-BN-ReLU-conv-BN(x). The ReLU inside the branch forbids a single conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv(channels, channels, 3), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = _conv(channels, channels, 3), nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class OSA(nn.Module):
    """VoVNet's one-shot aggregation: chained conv-BN-ReLU, all outputs concatenated once, 1x1 transition."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(_conv(channels, channels, 3), nn.BatchNorm2d(channels),
                                                  nn.ReLU()) for _ in range(3))
        self.concat_conv = nn.Sequential(_conv(4 * channels, channels, 1), nn.BatchNorm2d(channels),
                                         nn.ReLU())

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(features[-1]))
        return self.concat_conv(torch.cat(features, 1))


class Gated(nn.Module):
    """Data-dependent control flow: fx cannot trace it, so its inside is folded on its own."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = RepLike(channels)

    def forward(self, x):
        if x.mean() > 100:  # never true for the probe; a Python branch on a tensor value
            return x
        return self.block(x)


class PoolBranch(nn.Module):
    """DBB's average-pool branch beside a 3x3 conv-BN and the identity: the generic pass does not express
    pooling as a branch, so the block has its own `reparameterize()` (as timm's blocks do); with
    `wrong=True` that method folds badly (a bias off by 1), which the probe check must catch."""

    def __init__(self, channels: int, wrong: bool = False, own_method: bool = True) -> None:
        super().__init__()
        self.conv, self.bn = _conv(channels, channels, 3), nn.BatchNorm2d(channels)
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=True)
        self.reparam_conv, self.wrong = None, wrong
        if not own_method:
            self.reparameterize = None

    def forward(self, x):
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return self.bn(self.conv(x)) + self.pool(x) + x

    @torch.no_grad()
    def reparameterize(self):
        from deploykit.passes.fold import fold_bn_into, identity_kernel

        weight, bias = fold_bn_into(self.conv.weight, None, self.bn)
        channels = weight.shape[0]
        eye = identity_kernel(channels, 1, (3, 3))
        pool = eye[:, :, 1:2, 1:2].expand(-1, -1, 3, 3) / 9.0
        self.reparam_conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.reparam_conv.weight.copy_(weight + eye + pool)
        self.reparam_conv.bias.copy_(bias + (1.0 if self.wrong else 0.0))
        del self.conv, self.bn, self.pool


class PoolNet(nn.Module):
    def __init__(self, width: int = 8, **block) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(3, width, 3, 2), nn.BatchNorm2d(width), nn.ReLU())
        self.block = PoolBranch(width, **block)
        self.head = nn.Linear(width, 5)

    def forward(self, x):
        return self.head(F.relu(self.block(self.stem(x))).mean((2, 3)))


def pool_net() -> nn.Module:
    """A `--model-from` factory whose block neither the generic path nor an own method folds."""
    torch.manual_seed(0)
    return randomize_bn(PoolNet(own_method=False), seed=4).eval()


def timm_mobileone_s1() -> nn.Module:
    """The issue's `usermodels.py`: timm's MobileOne-S1 from timm's own factory."""
    import timm

    return timm.create_model("mobileone_s1", num_classes=1000)


def rep_net() -> nn.Module:
    """The `--model-from` factory: trained-looking BN statistics, eval mode."""
    torch.manual_seed(0)
    return randomize_bn(RepNet(), seed=4, input_shape=(16, 3, 32, 32))


def not_a_model():
    return 42


def broken_factory():
    raise RuntimeError("no weights here")
