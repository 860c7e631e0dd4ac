"""Property tests of the generic reparameterize pass: any sum of parallel branches it is given (k x k,
1 x k, k x 1 and 1 x 1 convs with or without BN and bias, grouped or depthwise, stride 1 or 2, plus BN-only,
scale and identity branches when the shapes allow) folds into one conv with the same output."""

from __future__ import annotations

import functools
import math
import operator

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from deploykit.passes import ReparameterizeConfig, reparameterize_with_report
from deploykit.passes.fold import ChannelScale
from tests.conftest import randomize_bn

GENERIC = ReparameterizeConfig(use_protocol=False)
REL_TOL = 1e-5  # fp32, relative to the output's largest magnitude


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds contention
    yield
    torch.set_num_threads(before)


class RandomBlock(nn.Module):
    """Conv branches plus optional BN / scale / identity branches, summed in a drawn order and nesting.

    It also speaks the protocol, so the same block checks that both paths agree."""

    def __init__(self, convs: list[nn.Module], skip_bn: nn.Module | None, scale: torch.Tensor | None,
                 identity: bool, order: list[int], right_nested: bool) -> None:
        super().__init__()
        self.convs, self.skip_bn = nn.ModuleList(convs), skip_bn
        self.scale = None if scale is None else nn.Parameter(scale)
        self.identity, self.order, self.right_nested = identity, order, right_nested

    def forward(self, x):
        terms = [conv(x) for conv in self.convs]
        terms += [self.skip_bn(x)] if self.skip_bn is not None else []
        terms += [x * self.scale] if self.scale is not None else []
        terms += [x] if self.identity else []
        terms = [terms[i] for i in self.order]
        if self.right_nested:
            return functools.reduce(lambda acc, t: operator.add(t, acc), reversed(terms[:-1]), terms[-1])
        return functools.reduce(operator.add, terms[1:], terms[0])

    def reparam_branches(self):
        extra = [self.skip_bn] if self.skip_bn is not None else []
        extra += [ChannelScale(self.scale)] if self.scale is not None else []
        return [*self.convs, *extra, *([nn.Identity()] if self.identity else [])]

    def reparam_rebuild(self, conv):
        return conv


@st.composite
def blocks(draw):
    """(block, input): 2-8 channels, 6-9 px, 1-5 branches."""
    same_shape = draw(st.booleans())  # identity-like branches need in == out channels and stride 1
    cin = draw(st.integers(2, 8))
    cout = cin if same_shape else draw(st.integers(1, 8))
    common = math.gcd(cin, cout)
    spec = {
        "stride": 1 if same_shape else draw(st.sampled_from([1, 2])),
        "groups": draw(st.sampled_from([g for g in range(1, common + 1) if common % g == 0])),  # to depthwise
    }
    k = draw(st.sampled_from([1, 3, 5]))
    kernels = draw(st.lists(st.sampled_from([(k, k), (1, 1), (1, k), (k, 1), (3, 3), (1, 3), (3, 1)]),
                            min_size=1, max_size=5))
    options = [(draw(st.booleans()), draw(st.booleans())) for _ in kernels]  # (bias, bn) per conv
    room = 5 - len(kernels) if same_shape else 0
    extras = draw(st.lists(st.sampled_from(["bn", "scale", "identity"]), unique=True, max_size=min(room, 3)))
    scale_shape = draw(st.sampled_from([(cin, 1, 1), (1, cin, 1, 1), (1,)]))
    order = list(draw(st.permutations(range(len(kernels) + len(extras)))))
    right_nested, seed, size = draw(st.booleans()), draw(st.integers(0, 2 ** 16)), draw(st.integers(6, 9))
    with torch.random.fork_rng():  # weights from the drawn seed, and the global generator left alone
        torch.manual_seed(seed)
        convs = [_conv_branch(cin, cout, kernel, *option, **spec) for kernel, option in zip(kernels, options)]
        block = RandomBlock(convs, nn.BatchNorm2d(cin) if "bn" in extras else None,
                            torch.rand(scale_shape) + 0.5 if "scale" in extras else None,
                            "identity" in extras, order, right_nested)
        x = torch.randn(2, cin, size, size)
    return randomize_bn(block, seed=seed).eval(), x


def _conv_branch(cin, cout, kernel, bias, bn, *, stride, groups) -> nn.Module:
    padding = (kernel[0] // 2, kernel[1] // 2)  # centred: every branch samples the same output grid
    conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=bias)
    return nn.Sequential(conv, nn.BatchNorm2d(cout)) if bn else conv


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()


def _folds_into_one_equal_conv(case) -> None:
    block, x = case
    folded, report = reparameterize_with_report(block, x[:1], config=GENERIC)
    convs = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert not report.left
    assert len(report.blocks) == (1 if len(block.order) > 1 else 0)
    with torch.no_grad():
        assert _rel_err(block(x), folded(x)) <= REL_TOL


# 200 examples by default (about a fifth of the time); the slow run draws 1,000
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks())
def test_any_branch_sum_folds_into_one_equal_conv(case):
    _folds_into_one_equal_conv(case)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks())
def test_any_branch_sum_folds_into_one_equal_conv_1000_examples(case):
    _folds_into_one_equal_conv(case)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks())
def test_protocol_and_graph_agree(case):
    block, x = case
    by_protocol = reparameterize_with_report(block, x[:1])[0]
    by_graph = reparameterize_with_report(block, x[:1], config=GENERIC)[0]
    with torch.no_grad():
        assert _rel_err(by_protocol(x), by_graph(x)) <= REL_TOL
