"""The folding math against plain PyTorch: same input, eval-mode reference, fp32 tolerance."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from deploykit.core.compare import compare_outputs
from deploykit.core.errors import DeployKitError
from deploykit.passes import fold_bn, reparameterize
from deploykit.passes.fold import merge_branches
from tests.conftest import randomize_bn


def _assert_same(ref: nn.Module, new: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        result = compare_outputs(ref(x).numpy(), new(x).numpy(), "fp32")
    assert result, result.summary()


@pytest.mark.parametrize("groups,dilation,bias", [(1, 1, False), (1, 2, True), (4, 1, True), (8, 1, False)])
def test_fold_conv_bn(groups, dilation, bias):
    model = randomize_bn(nn.Sequential(nn.Conv2d(8, 8, 3, padding=dilation, dilation=dilation, groups=groups,
                                                 bias=bias), nn.BatchNorm2d(8), nn.ReLU())).eval()
    folded = fold_bn(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    _assert_same(model, folded, torch.randn(2, 8, 12, 12))


def test_fold_linear_bn1d():
    model = randomize_bn(nn.Sequential(nn.Linear(16, 10), nn.BatchNorm1d(10))).eval()
    folded = fold_bn(model)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in folded.modules())
    _assert_same(model, folded, torch.randn(4, 16))


def test_fold_leaves_input_untouched_and_returns_eval():
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))).eval()
    before = copy.deepcopy(model.state_dict())
    folded = fold_bn(model)
    assert not folded.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_conv_with_two_users_is_not_folded():
    class Fork(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    model = randomize_bn(Fork()).eval()
    folded = fold_bn(model)
    _assert_same(model, folded, torch.randn(1, 3, 5, 5))


def test_training_mode_is_refused():
    with pytest.raises(DeployKitError, match="eval mode"):
        fold_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train())


def _conv_bn(cin, cout, k, stride, groups):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class _Block(nn.Module):
    """A minimal block speaking the reparameterization protocol."""

    def __init__(self, branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return torch.relu(sum(b(x) for b in self.branches))

    def reparam_branches(self):
        return list(self.branches)

    def reparam_rebuild(self, conv):
        return nn.Sequential(conv, nn.ReLU())


@pytest.mark.parametrize("groups", [1, 2, 8])
@pytest.mark.parametrize("stride", [1, 2])
def test_merge_branches_all_kinds(groups, stride):
    branches = [_conv_bn(8, 8, 3, stride, groups), _conv_bn(8, 8, 3, stride, groups), _conv_bn(8, 8, 1, stride, groups)]
    if stride == 1:
        branches += [nn.BatchNorm2d(8), nn.Identity()]
    block = randomize_bn(_Block(branches)).eval()
    merged = reparameterize(block)
    convs = [m for m in merged.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].kernel_size == (3, 3) and convs[0].groups == groups
    _assert_same(block, merged, torch.randn(2, 8, 9, 9))


def test_misaligned_branch_is_rejected():
    branches = [_conv_bn(4, 4, 3, 1, 1), nn.Conv2d(4, 4, 1, padding=1)]
    with pytest.raises(ValueError, match="does not align"):
        merge_branches(branches)


@pytest.mark.parametrize("layer", [nn.Linear(6, 5), nn.Conv2d(6, 4, 1), nn.Conv2d(6, 4, 3, groups=2),
                                   nn.Conv2d(6, 6, 2, stride=2, groups=6, bias=False)])
def test_a_norm_before_a_linear_or_unpadded_conv_folds_into_it(layer):
    """NormLinear (RepViT/LeViT heads) and NextViT's BN -> 1x1 conv: W (s x + t) + b, any groups."""
    from deploykit.passes.fold_bn import folded_pair

    torch.manual_seed(0)
    bn = nn.BatchNorm1d(6) if isinstance(layer, nn.Linear) else nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.normal_(), bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2)
    model = nn.Sequential(bn, layer).eval()
    x = torch.randn(3, 6) if isinstance(layer, nn.Linear) else torch.randn(3, 6, 8, 8)
    with torch.no_grad():
        expected, actual = model(x), folded_pair(layer, bn, "before")(x)
    assert ((expected - actual).abs().max() / expected.abs().max()).item() < 1e-6
