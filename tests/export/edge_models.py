"""Small models for the LiteRT / ExecuTorch target tests, importable by `--model-from`."""

from __future__ import annotations

import torch
from torch import nn


class Unlowerable(nn.Module):
    """A layer computing the modified Bessel function i0: neither LiteRT nor ExecuTorch lowers it."""

    def forward(self, x):
        return torch.special.i0(x)


class WithOddLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.odd = Unlowerable()
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.odd(self.stem(x)).mean((2, 3)))


def conv_bn_net() -> nn.Module:
    """conv-BN-ReLU, depthwise conv-BN, pointwise conv, pool, linear: BN to fold, three convs to count."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def odd_net() -> nn.Module:
    return WithOddLayer()
