"""The one implementation of the folding math: BatchNorm into a preceding conv/linear, and parallel
branches into a single conv. Every pass and every zoo block goes through these functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Kernel = tuple[torch.Tensor, torch.Tensor]  # (weight, bias)


def bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> Kernel:
    """BatchNorm in eval mode as y = scale * x + shift, per channel (in float64: folding should add no
    rounding of its own; the result is cast back when written into a layer)."""
    std = torch.sqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.double() if bn.affine else torch.ones_like(std)
    beta = bn.bias.double() if bn.affine else torch.zeros_like(std)
    scale = gamma / std
    return scale, beta - bn.running_mean * scale


def fold_bn_into(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module) -> Kernel:
    """Weight/bias of `layer` followed by `bn`, as one layer (conv of any groups/dilation, or linear)."""
    scale, shift = bn_affine(bn)
    bias = torch.zeros_like(scale) if bias is None else bias.double()
    folded_w = weight.double() * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return folded_w.detach(), (bias * scale + shift).detach()


def identity_kernel(channels: int, groups: int, kernel_size: tuple[int, int]) -> torch.Tensor:
    """A conv weight that copies its input: 1 at the centre tap of each channel's own input."""
    per_group = channels // groups
    weight = torch.zeros(channels, per_group, *kernel_size, dtype=torch.float64)
    centre = (kernel_size[0] // 2, kernel_size[1] // 2)
    for c in range(channels):
        weight[c, c % per_group, centre[0], centre[1]] = 1.0
    return weight


def _pad_to(weight: torch.Tensor, kernel_size: tuple[int, int]) -> torch.Tensor:
    """Centre a smaller kernel inside the larger one (zeros around it)."""
    dh, dw = kernel_size[0] - weight.shape[2], kernel_size[1] - weight.shape[3]
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError(f"kernel {tuple(weight.shape[2:])} cannot be centred in {kernel_size}")
    return F.pad(weight, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])


def branch_convs(branch: nn.Module) -> list[nn.Conv2d]:
    """The conv layers a branch holds (0 for identity/BN-only branches)."""
    return [m for m in branch.modules() if isinstance(m, nn.Conv2d)]


def branch_kernel(branch: nn.Module, geometry: "ConvGeometry") -> Kernel:
    """One branch as (weight, bias) of the fused conv's shape."""
    k = geometry.kernel_size
    if isinstance(branch, nn.Identity):
        return identity_kernel(geometry.out_channels, geometry.groups, k), _zeros(geometry.out_channels)
    if isinstance(branch, nn.modules.batchnorm._BatchNorm):
        return fold_bn_into(identity_kernel(geometry.out_channels, geometry.groups, k), None, branch)
    conv, bn = _conv_and_bn(branch)
    geometry.check_aligned(conv)
    weight, bias = (conv.weight, conv.bias) if bn is None else fold_bn_into(conv.weight, conv.bias, bn)
    bias = _zeros(conv.out_channels) if bias is None else bias
    return _pad_to(weight.detach().double(), k), bias.detach().double()


def _zeros(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.float64)


def _conv_and_bn(branch: nn.Module) -> tuple[nn.Conv2d, nn.Module | None]:
    if isinstance(branch, nn.Conv2d):
        return branch, None
    children = list(branch.children())
    if (len(children) == 2 and isinstance(children[0], nn.Conv2d)
            and isinstance(children[1], nn.modules.batchnorm._BatchNorm)):
        return children[0], children[1]
    raise TypeError(f"branch {type(branch).__name__} is not conv, conv-BN, BN or identity")


class ConvGeometry:
    """Shape of the fused conv: that of the largest-kernel conv among the branches."""

    def __init__(self, branches: list[nn.Module]) -> None:
        convs = [c for b in branches for c in branch_convs(b)]
        if not convs:
            raise ValueError("a multi-branch block needs at least one conv branch")
        main = max(convs, key=lambda c: c.kernel_size[0] * c.kernel_size[1])
        self.main = main
        self.in_channels, self.out_channels = main.in_channels, main.out_channels
        self.kernel_size, self.stride = tuple(main.kernel_size), tuple(main.stride)
        self.padding, self.groups = tuple(main.padding), main.groups

    def check_aligned(self, conv: nn.Conv2d) -> None:
        """A branch sums cleanly only if it samples the same pixels as the main conv."""
        same = (conv.in_channels, conv.out_channels, conv.groups, tuple(conv.stride)) == (
            self.in_channels, self.out_channels, self.groups, self.stride)
        offsets = [(K - k) // 2 for K, k in zip(self.kernel_size, conv.kernel_size)]
        aligned = all(P - p == o for P, p, o in zip(self.padding, conv.padding, offsets))
        if not (same and aligned and tuple(conv.dilation) == (1, 1) and conv.padding_mode == "zeros"):
            raise ValueError(f"branch conv {conv} does not align with the main conv {self.main}")

    def make_conv(self, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, groups=self.groups, bias=True)
        with torch.no_grad():
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
        return conv


@torch.no_grad()
def merge_branches(branches: list[nn.Module]) -> nn.Conv2d:
    """Sum of parallel branches -> one conv with bias (linearity of convolution)."""
    geometry = ConvGeometry(branches)
    kernels = [branch_kernel(b, geometry) for b in branches]
    weight = torch.stack([w for w, _ in kernels]).sum(0)
    bias = torch.stack([b for _, b in kernels]).sum(0)
    return geometry.make_conv(weight, bias)
