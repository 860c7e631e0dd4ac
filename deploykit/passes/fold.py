"""The one implementation of the folding math: BatchNorm into a preceding conv/linear, and parallel
branches into a single conv. Every pass and every zoo block goes through these functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Kernel = tuple[torch.Tensor, torch.Tensor]  # (weight, bias)


class NotFoldable(ValueError):
    """Branches that do not sum to one conv; `reason` is the short why, for reports."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> Kernel:
    """BatchNorm in eval mode as y = scale * x + shift, per channel (in float64: folding should add no
    rounding of its own; the result is cast back when written into a layer)."""
    std = torch.sqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.double() if bn.affine else torch.ones_like(std)
    beta = bn.bias.double() if bn.affine else torch.zeros_like(std)
    scale = gamma / std
    return scale, beta - bn.running_mean * scale


def affine_into(weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor,
                shift: torch.Tensor) -> Kernel:
    """Weight/bias of a layer followed by y = scale * x + shift per output channel, as one layer."""
    bias = torch.zeros_like(scale) if bias is None else bias.double()
    folded_w = weight.double() * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return folded_w.detach(), (bias * scale + shift).detach()


def affine_before(weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor, shift: torch.Tensor,
                  groups: int = 1) -> Kernel:
    """Weight/bias of a Linear or unpadded conv whose input is first mapped by x -> scale * x + shift per
    input channel: W (s x + t) + b = (W s) x + (sum of W t + b). (With zero padding a conv would see the
    shift inside the image and 0 on its border: only unpadded convs fold this way.)"""
    w = weight.double()
    out_channels, per_group = w.shape[0], w.shape[1]
    spatial = (1,) * (w.dim() - 2)
    s = scale.double().reshape(groups, per_group).repeat_interleave(out_channels // groups, dim=0)
    t = shift.double().reshape(groups, per_group).repeat_interleave(out_channels // groups, dim=0)
    bias = torch.zeros(out_channels, dtype=torch.float64, device=w.device) if bias is None else bias.double()
    folded_b = bias + (w * t.reshape(*t.shape, *spatial)).flatten(1).sum(1)
    return (w * s.reshape(*s.shape, *spatial)).detach(), folded_b.detach()


def fold_bn_into(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module) -> Kernel:
    """Weight/bias of `layer` followed by `bn`, as one layer (conv of any groups/dilation, or linear)."""
    return affine_into(weight, bias, *bn_affine(bn))


def identity_kernel(channels: int, groups: int, kernel_size: tuple[int, int], *,
                    device: torch.device | None = None) -> torch.Tensor:
    """A conv weight that copies its input: 1 at the centre tap of each channel's own input."""
    per_group = channels // groups
    weight = torch.zeros(channels, per_group, *kernel_size, dtype=torch.float64, device=device)
    out = torch.arange(channels, device=weight.device)
    weight[out, out % per_group, kernel_size[0] // 2, kernel_size[1] // 2] = 1.0
    return weight


class ChannelScale(nn.Module):
    """A branch `x * scale` with one learnt factor per channel (or one for all): DBB-style scale branches.

    `scale` is a scalar or shaped (C, 1, 1) / (1, C, 1, 1), so it broadcasts over channels only."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def per_channel(self, channels: int) -> torch.Tensor:
        scale = self.scale.double().reshape(-1)
        if scale.numel() not in (1, channels):
            raise NotFoldable(f"scale of {scale.numel()} values on {channels} channels",
                              "scale branch does not match the channels")
        return scale.expand(channels)


def conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """Numeric padding of a conv, also for padding='same'/'valid' (symmetric only: odd kernels)."""
    if not isinstance(conv.padding, str):
        return tuple(conv.padding)
    if conv.padding == "valid":
        return (0, 0)
    total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
    if any(t % 2 for t in total):
        raise NotFoldable(f"{conv} pads asymmetrically", "'same' padding of an even kernel is asymmetric")
    return (total[0] // 2, total[1] // 2)


def _pad_to(weight: torch.Tensor, kernel_size: tuple[int, int]) -> torch.Tensor:
    """Centre a smaller kernel inside the larger one (zeros around it); height and width independently,
    so 1xk and kx1 kernels centre in a kxk one."""
    dh, dw = kernel_size[0] - weight.shape[2], kernel_size[1] - weight.shape[3]
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError(f"kernel {tuple(weight.shape[2:])} cannot be centred in {kernel_size}")
    return F.pad(weight, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])


def branch_convs(branch: nn.Module) -> list[nn.Conv2d]:
    """The conv layers a branch holds (0 for identity/BN-only branches)."""
    return [m for m in branch.modules() if isinstance(m, nn.Conv2d)]


def branch_kernel(branch: nn.Module, geometry: "ConvGeometry") -> Kernel:
    """One branch as (weight, bias) of the fused conv's shape."""
    if isinstance(branch, (nn.Identity, nn.modules.batchnorm._BatchNorm, ChannelScale)):
        return _identity_like_kernel(branch, geometry)
    conv, bn = _conv_and_bn(branch)
    geometry.check_aligned(conv)
    weight, bias = (conv.weight, conv.bias) if bn is None else fold_bn_into(conv.weight, conv.bias, bn)
    bias = _zeros(conv.out_channels, weight.device) if bias is None else bias
    return _pad_to(weight.detach().double(), geometry.kernel_size), bias.detach().double()


def _identity_like_kernel(branch: nn.Module, geometry: "ConvGeometry") -> Kernel:
    """Identity, BN-only and scale branches: the identity kernel, then their per-channel affine."""
    channels = geometry.out_channels
    geometry.check_identity(getattr(branch, "num_features", channels))
    eye = identity_kernel(channels, geometry.groups, geometry.kernel_size, device=geometry.device)
    if isinstance(branch, nn.Identity):
        return eye, _zeros(channels, eye.device)
    if isinstance(branch, ChannelScale):
        return affine_into(eye, None, branch.per_channel(channels), _zeros(channels, eye.device))
    return fold_bn_into(eye, None, branch)


def _zeros(n: int, device: torch.device | None = None) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.float64, device=device)


def _conv_and_bn(branch: nn.Module) -> tuple[nn.Conv2d, nn.Module | None]:
    if isinstance(branch, nn.Conv2d):
        return branch, None
    children = list(branch.children())
    if (len(children) == 2 and isinstance(children[0], nn.Conv2d)
            and isinstance(children[1], nn.modules.batchnorm._BatchNorm)):
        return children[0], children[1]
    raise TypeError(f"branch {type(branch).__name__} is not conv, conv-BN, BN, scale or identity")


def _scaled(kernel: Kernel, factor, channels: int) -> Kernel:
    if factor is None:
        return kernel
    factor = torch.as_tensor(factor, dtype=torch.float64, device=kernel[0].device).reshape(-1)
    if factor.numel() not in (1, channels):
        raise NotFoldable(f"factor of {factor.numel()} values on {channels} channels",
                          "scale of a branch does not match the channels")
    factor = factor.expand(channels)
    return affine_into(kernel[0], kernel[1], factor, torch.zeros_like(factor))


class ConvGeometry:
    """Shape of the fused conv: the largest kernel height and width among the branches, with the stride,
    groups and channels of the largest-kernel conv (the first, if several)."""

    def __init__(self, branches: list[nn.Module]) -> None:
        convs = [c for b in branches for c in branch_convs(b)]
        if not convs:
            raise NotFoldable("a multi-branch block needs at least one conv branch", "no conv branch")
        main = max(convs, key=lambda c: c.kernel_size[0] * c.kernel_size[1])
        self.main = main
        self.in_channels, self.out_channels = main.in_channels, main.out_channels
        self.kernel_size = tuple(max(c.kernel_size[i] for c in convs) for i in (0, 1))
        self.stride, self.groups = tuple(main.stride), main.groups
        self.padding = self._centred(conv_padding(main), main.kernel_size)
        self.device, self.dtype = main.weight.device, main.weight.dtype

    def _centred(self, padding: tuple[int, int], kernel: tuple[int, int]) -> tuple[int, int]:
        """Padding of the fused kernel that keeps `kernel`'s outputs where they were (1x3 + 3x1 -> 3x3)."""
        grow = [K - k for K, k in zip(self.kernel_size, kernel)]
        if any(g % 2 for g in grow):
            raise NotFoldable(f"kernel {tuple(kernel)} cannot be centred in {self.kernel_size}",
                              "kernels cannot be centred in one another (even size difference)")
        return tuple(p + g // 2 for p, g in zip(padding, grow))

    def misalignment(self, conv: nn.Conv2d) -> str | None:
        """Why `conv`'s output cannot be summed into the fused conv's, or None when it can."""
        stride = tuple(conv.stride)
        problems = {
            "branches differ in channels": (conv.in_channels, conv.out_channels) != (self.in_channels,
                                                                                      self.out_channels),
            "branches differ in groups": conv.groups != self.groups,
            f"branches differ in stride ({stride} vs {self.stride})": stride != self.stride,
            "dilated conv in a branch": tuple(conv.dilation) != (1, 1),
            f"{conv.padding_mode} padding in a branch": conv.padding_mode != "zeros",
        }
        first = next((why for why, bad in problems.items() if bad), None)
        if first is None and self._centred(conv_padding(conv), conv.kernel_size) != self.padding:
            return "branch paddings do not centre the kernels (outputs misaligned)"
        return first

    def check_aligned(self, conv: nn.Conv2d) -> None:
        """A branch sums cleanly only if it samples the same pixels as the main conv."""
        problem = self.misalignment(conv)
        if problem:
            raise NotFoldable(f"branch conv {conv} does not align with the main conv {self.main}: {problem}",
                              problem)

    def check_identity(self, channels: int) -> None:
        """Identity-like branches (identity, BN, scale) exist only where output can equal input."""
        if not (self.in_channels == self.out_channels == channels and self.stride == (1, 1)):
            raise NotFoldable(f"identity-like branch of {channels} channels on a {self.in_channels}->"
                              f"{self.out_channels} conv of stride {self.stride}",
                              "identity branch needs equal channels and stride 1")

    def make_conv(self, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
        # skip_init: the weights are overwritten at once, a random init would only cost time
        conv = torch.nn.utils.skip_init(nn.Conv2d, self.in_channels, self.out_channels, self.kernel_size,
                                        self.stride, self.padding, groups=self.groups, bias=True,
                                        device=self.device, dtype=self.dtype)
        with torch.no_grad():
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
        return conv


@torch.no_grad()
def merge_branches(branches: list[nn.Module], factors: list | None = None) -> nn.Conv2d:
    """Sum of parallel branches -> one conv with bias (linearity of convolution). `factors[i]` (None, a
    scalar or one value per output channel) multiplies branch i: `x + g * (a(x) - b(x))` is a sum too."""
    geometry = ConvGeometry(branches)
    kernels = [branch_kernel(b, geometry) for b in branches]
    if factors is not None:
        kernels = [_scaled(k, f, geometry.out_channels) for k, f in zip(kernels, factors)]
    weight = torch.stack([w for w, _ in kernels]).sum(0)
    bias = torch.stack([b for _, b in kernels]).sum(0)
    return geometry.make_conv(weight, bias)


@torch.no_grad()
def merge_linear_branches(branches: list[nn.Module], factors: list | None = None) -> nn.Linear:
    """Sum of parallel Linear branches (each a Linear, a BN -> Linear or a Linear -> BN, times its factor)
    of one input -> one Linear: a distillation head's `(head(x) + head_dist(x)) / 2`."""
    kernels = [_linear_kernel(b) for b in branches]
    shapes = {tuple(w.shape) for w, _ in kernels}
    if len(shapes) != 1:
        raise NotFoldable(f"linear branches of shapes {sorted(shapes)}", "branches differ in features")
    out_features = kernels[0][0].shape[0]
    if factors is not None:
        kernels = [_scaled(k, f, out_features) for k, f in zip(kernels, factors)]
    weight = torch.stack([w for w, _ in kernels]).sum(0)
    bias = torch.stack([b for _, b in kernels]).sum(0)
    first = next(m for b in branches for m in b.modules() if isinstance(m, nn.Linear))
    linear = nn.Linear(weight.shape[1], weight.shape[0], device=first.weight.device, dtype=first.weight.dtype)
    linear.weight.copy_(weight)
    linear.bias.copy_(bias)
    return linear


def _linear_kernel(branch: nn.Module) -> Kernel:
    layers = list(branch.children()) if isinstance(branch, nn.Sequential) else [branch]
    linear = next(m for m in layers if isinstance(m, nn.Linear))
    weight, bias = linear.weight.detach().double(), linear.bias
    bias = torch.zeros(weight.shape[0], dtype=torch.float64, device=weight.device) if bias is None \
        else bias.detach().double()
    if layers[0] is not linear:
        return affine_before(weight, bias, *bn_affine(layers[0]))
    if len(layers) == 2:
        return affine_into(weight, bias, *bn_affine(layers[1]))
    return weight, bias
