"""deploykit's generic reparameterize on timm's own model code (timm pinned in the dev extra; models are
built with pretrained=False, never downloaded), and a model's own fold method as a checked fallback.

The default run keeps a small representative set at a small input; the full acceptance sweep (every
family, BN statistics measured on real images, counts in the exported ONNX) is marked slow."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.fx as fx
from timm.layers import BatchNormAct2d, freeze_batch_norm_2d
from timm.utils.model import reparameterize_model
from torch import nn

from deploykit.core.compare import compare_outputs
from deploykit.passes import ReparameterizeConfig, reparameterize_with_report
from deploykit.passes.own_methods import without_own_methods
from deploykit.passes.runner import run_passes
from tests.conftest import randomize_bn
from tests.passes import graph_models as gmod

_BN = nn.modules.batchnorm._BatchNorm


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/passes/conftest.py


def _timm(name: str, size: int, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    model = timm.create_model(name, pretrained=False).eval()
    randomize_bn(model, seed=seed, input_shape=(8, 3, size, size))  # statistics measured, not init values
    return model, torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _rel_err(ref: nn.Module, new: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return compare_outputs(ref(x).numpy(), new(x).numpy(), "fp32").max_rel_err


def _count(model: nn.Module, cls) -> int:
    return sum(isinstance(m, cls) for m in model.modules())


def _functional_norms(model: nn.Module) -> int:
    graph = model.graph if isinstance(model, fx.GraphModule) else fx.symbolic_trace(model).graph
    return sum(n.op == "call_function" and "batch_norm" in getattr(n.target, "__name__", "") for n in graph.nodes)


@pytest.mark.parametrize("name", ["mobileone_s0", "repvgg_a0", "repghostnet_050"])
def test_generic_pass_reaches_timms_own_fold_without_its_methods(name):
    model, x = _timm(name, 64)
    masked, offering = without_own_methods(model)
    assert offering and all(getattr(m, "reparameterize", None) is None for m in masked.modules()
                            if hasattr(type(m), "reparameterize"))
    deployed = run_passes(masked, [("reparameterize", None), ("fold_bn", None)], x[:1]).model
    by_timm = reparameterize_model(model)
    assert _count(deployed, nn.Conv2d) <= _count(by_timm, nn.Conv2d)
    assert _count(deployed, _BN) == 0 and _functional_norms(deployed) == 0
    assert _rel_err(model, deployed, x) <= 1e-4


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small_100"])
def test_every_norm_of_a_model_without_fold_method_is_folded(name):
    model, x = _timm(name, 64)
    assert _count(reparameterize_model(model), _BN) > 0  # timm itself leaves them
    deployed, report = reparameterize_with_report(model, x[:1])
    assert _count(deployed, _BN) == 0 and _functional_norms(deployed) == 0 and not report.unfolded
    assert report.conv_bn_folded == _count(model, _BN)
    assert _rel_err(model, deployed, x) <= 1e-4


def test_batchnorm_act_folds_and_keeps_its_activation_and_drop():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False),
                          BatchNormAct2d(8, act_layer=nn.SiLU, drop_layer=nn.Dropout)).eval()
    randomize_bn(model, seed=1)
    x = torch.randn(2, 3, 16, 16)
    deployed, report = reparameterize_with_report(model, x[:1])
    assert report.conv_bn_folded == 1 and _count(deployed, _BN) == 0
    assert _count(deployed, nn.SiLU) == 1  # the fused activation survives the fold
    assert _rel_err(model, deployed, x) <= 1e-5


def test_frozen_norms_fold_torchvision_and_timm():
    model, x = _timm("resnet18", 64)
    norms = _count(model, _BN)
    frozen = freeze_batch_norm_2d(model)  # BatchNormAct2d -> timm's FrozenBatchNormAct2d, BN2d -> FrozenBN2d
    assert _count(frozen, _BN) == 0 and norms == 20
    deployed, report = reparameterize_with_report(frozen, x[:1])
    assert report.conv_bn_folded == norms and not report.unfolded
    assert _rel_err(frozen, deployed, x) <= 1e-4


def test_sync_batchnorm_in_eval_folds():
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4), nn.ReLU()), seed=2).eval()
    x = torch.randn(2, 3, 9, 9)
    deployed, report = reparameterize_with_report(model, x[:1])
    assert report.conv_bn_folded == 1 and _count(deployed, _BN) == 0
    assert _rel_err(model, deployed, x) <= 1e-5


def test_fastvit_repmixer_is_one_linear_combination():
    """FastViT's `x + gamma * (mixer(x) - norm(x))`, each of mixer/norm itself a branch sum: one conv."""
    from timm.models.fastvit import RepMixer

    torch.manual_seed(0)
    block = RepMixer(8, kernel_size=3, layer_scale_init_value=0.5)
    with torch.no_grad():
        block.layer_scale.gamma.uniform_(0.2, 1.5)  # per-channel, not the init constant
    block = randomize_bn(block, seed=3).eval()
    masked, _ = without_own_methods(block)
    x = torch.randn(2, 8, 12, 12)
    deployed, report = reparameterize_with_report(masked, x[:1])
    assert _count(deployed, nn.Conv2d) == 1 and _count(deployed, _BN) == 0 and len(report.blocks) == 1
    # x, then gamma * (the mixer's identity BN, 1x1 and 3x3 conv-BN) and -gamma * (the norm's BN)
    assert sorted(report.blocks[0].branches) == ["bn*scale", "bn*scale", "conv1x1+bn*scale", "conv3x3+bn*scale",
                                                 "identity"]
    assert _rel_err(block, deployed, x) <= 1e-5


def test_repvit_distillation_head_is_one_linear():
    """`(head(x) + head_dist(x)) / 2` of two BN -> Linear heads: one Linear, no norm (timm's fuse does it too)."""
    from timm.models.repvit import RepVitClassifier

    torch.manual_seed(0)
    head = randomize_bn(RepVitClassifier(16, 10, distillation=True), seed=4).eval()
    x = torch.randn(3, 16)
    deployed, report = reparameterize_with_report(without_own_methods(head)[0], x[:1])
    assert _count(deployed, nn.Linear) == 1 and _count(deployed, _BN) == 0
    assert report.blocks[0].branches == ("bn+linear*scale", "bn+linear*scale") and not report.unfolded
    assert _rel_err(head, deployed, x) <= 1e-5


# --- a model's own method: a fallback, checked like every fold -------------------------------------------

def _pool_net(**block) -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(gmod.PoolNet(**block), seed=5).eval()


def test_own_method_folds_what_the_generic_path_leaves():
    model, x = _pool_net(), torch.randn(2, 3, 32, 32)
    deployed, report = reparameterize_with_report(model, x[:1])
    own = [b for b in report.blocks if b.via == "own-method"]
    assert [(b.where, b.branches) for b in own] == [("block", ("reparameterize()",))]
    assert own[0].max_rel_err is not None and own[0].max_rel_err < 1e-5
    assert not report.unfolded and _count(deployed, nn.AvgPool2d) == 0
    assert _rel_err(model, deployed, x) <= 1e-5
    assert model.block.reparam_conv is None  # the caller's model is untouched


def test_a_wrong_own_method_is_caught_and_the_block_stays():
    model, x = _pool_net(wrong=True), torch.randn(2, 3, 32, 32)
    deployed, report = reparameterize_with_report(model, x[:1])
    assert not [b for b in report.blocks if b.via == "own-method"]
    rejected = [x for x in report.left if x.op == "own-method"]
    assert rejected and "changed the block's output" in rejected[0].reason
    assert [u.where for u in report.unfolded] == ["block"] and _count(deployed, nn.AvgPool2d) == 1
    assert _rel_err(model, deployed, x) <= 1e-5


def test_own_methods_can_be_turned_off():
    model, x = _pool_net(), torch.randn(2, 3, 32, 32)
    _, report = reparameterize_with_report(model, x[:1], config=ReparameterizeConfig(use_own_methods=False))
    assert [u.where for u in report.unfolded] == ["block"]
    assert "AvgPool2d inside a branch" in report.unfolded[0].reason


# --- the acceptance sweep: real images, exported ONNX, every family --------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobileone_s0", "mobileone_s1", "repvgg_a0", "repvgg_b0", "fastvit_t8",
                                  "repvit_m0_9", "repghostnet_050", "levit_128s", "resnet18", "efficientnet_b0",
                                  "mobilenetv3_small_100", "regnetx_002"])
def test_generic_pass_on_real_statistics_matches_timm_in_onnx(name, data_dir, tmp_path):
    from scripts.bench_timm_reparam import bench_model

    row = bench_model(name, runs=3, tmp=tmp_path)
    assert row["conv"]["deploykit"] <= row["conv"]["timm"] and row["bn"]["deploykit"] <= row["bn"]["timm"]
    assert row["bn"]["deploykit"] == 0 and row["unfolded"] == {"sums": 0, "norms": 0, "first": []}
    assert row["torch_norms"]["deploykit"] == 0  # in PyTorch too: the ONNX exporter folds Conv+BN by itself
    assert row["errors"]["deploykit"] <= 1e-4
