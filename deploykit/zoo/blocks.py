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
