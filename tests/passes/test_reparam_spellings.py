"""Property tests: the same multi-branch block written the ways model libraries write it folds the same.

Drawn per example: the normalization of each branch (BatchNorm2d, SyncBatchNorm, a BatchNorm subclass that
keeps torch's forward, a timm-style subclass that calls `F.batch_norm` itself and then an identity drop, a
module calling `F.batch_norm` on its own buffers, torchvision's FrozenBatchNorm2d), and how the sum is
spelt (`sum()` from 0 over a list with None entries, `out = a + b; for c in rest: out += c(x)`, in-place
`out.add_(...)`, a `0 +` start). Every example must fold into one conv with the same output."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from deploykit.passes import ReparameterizeConfig, reparameterize_with_report
from tests.conftest import randomize_bn

GENERIC = ReparameterizeConfig(use_protocol=False, use_own_methods=False)
REL_TOL = 1e-5  # fp32, relative to the output's largest magnitude


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/passes/conftest.py


class KeepsForwardBN(nn.BatchNorm2d):
    """A subclass that adds nothing to the math (e.g. a library's marker class)."""


class ActBN(nn.BatchNorm2d):
    """timm's BatchNormAct2d in short: F.batch_norm on its own buffers, then a drop and an activation slot."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.drop, self.act = nn.Dropout(0.1), nn.Identity()

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                         0.1, self.eps)
        return self.act(self.drop(x))


class BufferBN(nn.Module):
    """Not a BatchNorm class at all: a module that calls F.batch_norm on stored tensors."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.randn(channels) * 0.1)
        self.register_buffer("var", torch.rand(channels) * 0.5 + 0.5)
        self.gamma = nn.Parameter(torch.rand(channels) * 0.5 + 0.75)
        self.beta = nn.Parameter(torch.randn(channels) * 0.1)

    def forward(self, x):
        return F.batch_norm(x, self.mean, self.var, self.gamma, self.beta, False, 0.1, 1e-3)


def frozen_bn(channels: int) -> FrozenBatchNorm2d:
    bn = FrozenBatchNorm2d(channels)
    bn.weight.copy_(torch.rand(channels) * 0.5 + 0.75)
    bn.bias.copy_(torch.randn(channels) * 0.1)
    bn.running_mean.copy_(torch.randn(channels) * 0.1)
    bn.running_var.copy_(torch.rand(channels) * 0.5 + 0.5)
    return bn


NORMS = {"bn": nn.BatchNorm2d, "sync": nn.SyncBatchNorm, "subclass": KeepsForwardBN, "act": ActBN,
         "functional": BufferBN, "frozen": frozen_bn}


class SpeltBlock(nn.Module):
    """Conv-norm branches (some slots None), an optional identity-norm branch, summed as `spelling` says."""

    def __init__(self, branches: list[nn.Module | None], skip: nn.Module | None, spelling: str) -> None:
        super().__init__()
        self.branches, self.skip, self.spelling = nn.ModuleList(branches), skip, spelling

    def forward(self, x):
        convs = [b for b in self.branches if b is not None]
        if self.spelling == "sum":
            return sum(b(x) for b in [*self.branches, self.skip] if b is not None)
        skip = 0 if self.skip is None else self.skip(x)
        if self.spelling == "loop":  # timm's MobileOne: out = scale + identity; for conv in convs: out += conv(x)
            out = convs[0](x) + skip
            for conv in convs[1:]:
                out += conv(x)
            return out
        if self.spelling == "add_":
            out = convs[0](x)
            for conv in convs[1:]:
                out.add_(conv(x))
            return out.add_(skip) if self.skip is not None else out
        out = 0  # "zero": a sum that starts from 0
        for conv in convs:
            out = out + conv(x)
        return out + skip


@st.composite
def spelt_blocks(draw):
    channels, size, seed = draw(st.integers(2, 6)), draw(st.integers(5, 8)), draw(st.integers(0, 2 ** 16))
    kernels = draw(st.lists(st.sampled_from([1, 3]), min_size=1, max_size=4))
    norms = draw(st.lists(st.sampled_from(sorted(NORMS)), min_size=len(kernels), max_size=len(kernels)))
    holes = draw(st.lists(st.booleans(), min_size=len(kernels), max_size=len(kernels)))
    skip = draw(st.sampled_from([None, *sorted(NORMS)]))
    spelling = draw(st.sampled_from(["sum", "loop", "add_", "zero"]))
    if len(kernels) + (skip is not None) < 2:
        skip = "bn"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        branches = []
        for k, norm, hole in zip(kernels, norms, holes):
            branches += [nn.Sequential(nn.Conv2d(channels, channels, k, padding=k // 2, bias=False),
                                       NORMS[norm](channels))]
            branches += [None] if hole else []
        block = SpeltBlock(branches, None if skip is None else NORMS[skip](channels), spelling)
        x = torch.randn(2, channels, size, size)
    return randomize_bn(block, seed=seed).eval(), x


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spelt_blocks())
def test_every_spelling_folds_into_one_equal_conv(case):
    block, x = case
    with torch.no_grad():
        expected = block(x.clone())
    folded, report = reparameterize_with_report(block, x[:1], config=GENERIC)
    assert [type(m) for m in folded.modules() if isinstance(m, nn.Conv2d)] == [nn.Conv2d]
    assert not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, BufferBN, FrozenBatchNorm2d))
                   for m in folded.modules())
    assert not report.unfolded and len(report.blocks) == 1 and report.blocks[0].via == "graph"
    with torch.no_grad():
        actual = folded(x.clone())
    assert ((expected - actual).abs().max() / expected.abs().max()).item() <= REL_TOL
