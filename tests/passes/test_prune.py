"""Channel pruning: dependency-consistent on every zoo model (oracle: zeroing the removed channels in the
unpruned model gives the pruned model's output), rounded counts, pure, and deployable (fold + ONNX parity)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from deploykit import zoo
from deploykit.core.compare import compare_outputs
from deploykit.core.errors import DeployKitError
from deploykit.passes import PASSES
from deploykit.passes.prune import PruneConfig, apply_plan, kept_channels, plan_pruning, prune_channels
from tests.conftest import randomize_bn

pytest.importorskip("torch_pruning")

# Seconds each at 32-64 px; the rest of the zoo (deeper or wider) runs in the slow set.
QUICK = {"resnet20_cifar", "mobileone_s0_cifar", "repvgg_a0_cifar", "mobilenet_v1_025", "vovnet27_slim",
         "efficientnet_lite0"}
ZOO = [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in zoo.names()]


def _input(name: str, batch: int = 2) -> torch.Tensor:
    size = 32 if zoo.get(name).input_size <= 32 else 64
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(3))


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(zoo.create(name, num_classes=10), seed=1, input_shape=(16, *_input(name).shape[1:]))


def _zero_removed(reference: nn.Module, pruned_work: nn.Module, planned) -> None:
    """Zero, in `reference`, every output channel the plan removes from `pruned_work` (same module names);
    Torch-Pruning's own op nodes (adds, concats) hold no weights and are skipped."""
    graph, plan = planned
    names = {id(m): n for n, m in pruned_work.named_modules()}
    for item in plan:
        for dep, idxs in graph.get_pruning_group(item.root, item.handler, item.remove):
            if graph.is_out_channel_pruning_fn(dep.handler) and id(dep.target.module) in names:
                module = reference.get_submodule(names[id(dep.target.module)])
                with torch.no_grad():
                    for tensor in (getattr(module, "weight", None), getattr(module, "bias", None)):
                        if tensor is not None:
                            tensor[idxs] = 0


@pytest.mark.parametrize("name", ZOO)
def test_pruning_removes_exactly_the_zeroed_channels(name):
    torch.set_num_threads(1)
    model, x = _model(name), _input(name)
    reference, work = copy.deepcopy(model), copy.deepcopy(model)
    config = PruneConfig(ratio=0.3)
    planned = plan_pruning(work, x[:1], config, 0.3)
    assert planned[1], f"{name}: nothing to prune"
    _zero_removed(reference, work, planned)
    apply_plan(work, planned)
    with torch.no_grad():
        result = compare_outputs(reference(x).numpy(), work.eval()(x).numpy(), "fp32")
    assert result, f"{name}: {result.summary()}"
    assert sum(p.numel() for p in work.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ZOO)
def test_pruned_model_folds_and_exports_with_parity(name, tmp_path):
    from deploykit.export.onnx import export_onnx
    from deploykit.passes import fold_bn, reparameterize
    from deploykit.runtimes.onnxruntime import OrtModel

    torch.set_num_threads(1)
    x = _input(name, batch=1)
    pruned = prune_channels(_model(name), x, ratio=0.3)
    deployed = fold_bn(reparameterize(pruned))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in deployed.modules())
    export_onnx(deployed, x, tmp_path / "m.onnx")
    with torch.no_grad():
        reference = pruned(x).numpy()
    result = compare_outputs(reference, OrtModel(tmp_path / "m.onnx", threads=1).run(x.numpy()), "fp32")
    assert result, f"{name}: {result.summary()}"


def test_every_zoo_model_has_a_case():
    assert {p if isinstance(p, str) else p.values[0] for p in ZOO} == set(zoo.names())


@pytest.mark.parametrize("channels,ratio,expected", [(64, 0.3, 48), (64, 0.0, 64), (16, 0.3, 8), (16, 0.9, 8),
                                                     (8, 0.5, 8), (4, 0.5, 4), (20, 0.5, 8), (512, 0.5, 256)])
def test_kept_channels_round_to_nearest_multiple(channels, ratio, expected):
    assert kept_channels(channels, ratio, 8) == expected


def test_counts_are_multiples_of_round_to_and_classifier_untouched():
    model, x = _model("mobileone_s0_cifar"), _input("mobileone_s0_cifar", 1)
    pruned = prune_channels(model, x, ratio=0.5, round_to=16)
    widths = {m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)}
    assert all(w % 16 == 0 for w in widths), widths
    assert pruned.linear.out_features == 10 and pruned.linear.in_features < model.linear.in_features


def test_input_never_mutated_and_ignore_keeps_layers():
    model, x = _model("resnet20_cifar"), _input("resnet20_cifar", 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune_channels(model, x, ratio=0.5, ignore=("layer3",))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert pruned.layer1[0].conv1.out_channels == 8 and pruned.layer3[0].conv1.out_channels == 64
    # the option-A residual streams keep their widths (prune_fixed_layers)
    assert [b.conv2.out_channels for b in pruned.layer2] == [32, 32, 32]


def test_target_macs_reaches_the_budget():
    from deploykit.profile.cost import count_cost

    model, x = _model("resnet20_cifar"), _input("resnet20_cifar", 1)
    full = count_cost(model, 32).macs
    pruned = prune_channels(model, x, target_macs=full // 2)
    assert full // 3 < count_cost(pruned, 32).macs <= full // 2


@pytest.mark.parametrize("importance", ["l2", "bn_scale", "taylor"])
def test_importances_choose_different_but_valid_channels(importance):
    model, x = _model("resnet20_cifar"), _input("resnet20_cifar", 8)
    labels = torch.arange(8) % 10
    pruned = prune_channels(model, x, ratio=0.5, importance=importance, labels=labels)
    assert pruned(x).shape == (8, 10)
    assert all(p.grad is None for p in model.parameters())


def test_taylor_needs_labels_and_the_pass_refuses_it():
    model, x = _model("resnet20_cifar"), _input("resnet20_cifar", 2)
    with pytest.raises(DeployKitError, match="labels"):
        prune_channels(model, x, ratio=0.3, importance="taylor")
    with pytest.raises(DeployKitError, match="taylor"):
        PASSES.get("prune_channels").fn(model, PruneConfig(ratio=0.3, importance="taylor", input_size=32))


def test_config_is_frozen_and_validated():
    with pytest.raises(DeployKitError):
        PruneConfig()
    with pytest.raises(DeployKitError):
        PruneConfig(ratio=0.3, target_macs=10)
    with pytest.raises(DeployKitError):
        PruneConfig(ratio=1.0)
    with pytest.raises(Exception):
        PruneConfig(ratio=0.3).ratio = 0.5  # frozen
    assert PASSES.get("prune_channels").config_type is PruneConfig


def test_registered_pass_prunes_with_its_input_size():
    model = _model("resnet20_cifar")
    pruned = PASSES.get("prune_channels").fn(model, PruneConfig(ratio=0.5, input_size=32))
    assert pruned.layer1[0].conv1.out_channels == 8


def test_grouped_conv_is_left_whole():
    """True grouped convs (1 < groups < channels) are fenced off: Torch-Pruning mis-indexes them."""
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.Conv2d(32, 64, 3, padding=1, groups=4), nn.BatchNorm2d(64), nn.ReLU(),
                          nn.Conv2d(64, 64, 1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(64, 10)).eval()
    x = torch.randn(1, 3, 16, 16)
    pruned = prune_channels(model, x, ratio=0.5)
    assert (pruned[0].out_channels, pruned[3].in_channels, pruned[3].out_channels, pruned[3].groups) == (32, 32, 64, 4)
    assert pruned[6].out_channels == 32
    assert pruned(x).shape == (1, 10)
