"""MobileOne and RepVGG against their papers and reference repos: structure, names, params and MACs.

Structure and cost checks build the models on the meta device (no weights allocated, so even the 123 M
parameter RepVGG-B3 training form costs nothing); only the forward test allocates real weights.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deploykit import zoo
from deploykit.passes import reparameterize
from deploykit.passes.reparameterize import is_multibranch
from deploykit.zoo.blocks import SEBlock

FAMILIES = ("mobileone", "repvgg")
# The ImageNet models, checked against their papers; the CIFAR-10 variants (same blocks, stride-1 stem) below.
NAMES = [n for n in zoo.names() if zoo.get(n).family in FAMILIES and not n.endswith("_cifar")]
CIFAR = {"mobileone_s0_cifar": "mobileone_s0", "repvgg_a0_cifar": "repvgg_a0"}
MOBILEONE = [n for n in NAMES if n.startswith("mobileone")]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The machine is shared; these models are small enough at 64x64 for a single thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def meta_model(name: str) -> nn.Module:
    with torch.device("meta"):
        return zoo.get(name).builder(num_classes=1000)


def blocks(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if is_multibranch(m)}


def main_conv(block: nn.Module) -> nn.Conv2d:
    """The conv whose geometry the fused conv takes: the largest kernel among the branches."""
    convs = [m for b in block.reparam_branches() for m in b.modules() if isinstance(m, nn.Conv2d)]
    return max(convs, key=lambda c: c.kernel_size[0] * c.kernel_size[1])


def fused_conv_count(module: nn.Module) -> int:
    """Convs of the deploy form: one per multi-branch block, plus bare convs; SE convs not counted."""
    if isinstance(module, SEBlock):
        return 0
    if is_multibranch(module) or isinstance(module, nn.Conv2d):
        return 1
    return sum(fused_conv_count(child) for child in module.children())


def deploy_params(module: nn.Module) -> int:
    """Parameters after reparameterization: each block's fused conv (weight + bias) plus what the block
    keeps outside its branches (SE), plus everything outside blocks (the classifier)."""
    if is_multibranch(module):
        conv = main_conv(module)
        in_branches = {id(p) for b in module.reparam_branches() for p in b.parameters()}
        kept = sum(p.numel() for p in module.parameters() if id(p) not in in_branches)
        return conv.weight.numel() + conv.out_channels + kept
    own = sum(p.numel() for p in module.parameters(recurse=False))
    return own + sum(deploy_params(child) for child in module.children())


def compute_units(module: nn.Module) -> list[nn.Module]:
    """What does multiply-adds in the deploy form: fused blocks, their SE convs, bare convs and linears."""
    if is_multibranch(module):
        return [module, *[m for m in module.modules() if isinstance(m, SEBlock)]]
    if isinstance(module, (nn.Conv2d, nn.Linear, SEBlock)):
        return [module]
    return [unit for child in module.children() for unit in compute_units(child)]


def unit_macs(unit: nn.Module, out: torch.Tensor) -> int:
    if isinstance(unit, SEBlock):  # two 1x1 convs on the pooled 1x1 map
        return unit.reduce.weight.numel() + unit.expand.weight.numel()
    layer = main_conv(unit) if is_multibranch(unit) else unit
    return out[0].numel() * layer.weight[0].numel()


def deploy_macs(model: nn.Module, size: int = 224) -> int:
    """Multiply-adds of the deploy form for one image, from output shapes of a meta-device forward."""
    total = 0

    def count(unit, _inputs, out):
        nonlocal total
        total += unit_macs(unit, out)

    handles = [u.register_forward_hook(count) for u in compute_units(model)]
    model(torch.empty(1, 3, size, size, device="meta"))
    for handle in handles:
        handle.remove()
    return total


def test_every_variant_is_registered():
    expected = {f"mobileone_s{i}" for i in range(5)} | {f"repvgg_{v}" for v in ("a0", "a1", "a2", "b0", "b1", "b2", "b3")}
    assert set(NAMES) == expected


@pytest.mark.parametrize("name", NAMES)
def test_forward_at_64(name):
    torch.manual_seed(0)
    model = zoo.create(name, num_classes=10)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MOBILEONE)
def test_mobileone_conv_branches(name):
    per_block = {path: len(b.rbr_conv) for path, b in blocks(meta_model(name)).items()}
    k = 4 if name == "mobileone_s0" else 1
    assert per_block.pop("stage0") == 1  # the reference stem has one conv branch even in S0
    assert set(per_block.values()) == {k}


@pytest.mark.parametrize("name", MOBILEONE)
def test_mobileone_scale_branch_only_beside_3x3(name):
    for block in blocks(meta_model(name)).values():
        assert (block.rbr_scale is not None) == (main_conv(block).kernel_size == (3, 3))


def _identity_branch(block: nn.Module) -> nn.Module | None:
    attribute = "rbr_skip" if hasattr(block, "rbr_skip") else "rbr_identity"  # MobileOne / RepVGG name
    return getattr(block, attribute)


@pytest.mark.parametrize("name", NAMES)
def test_identity_branch_only_where_shapes_allow(name):
    for block in blocks(meta_model(name)).values():
        conv = main_conv(block)
        fits = conv.in_channels == conv.out_channels and conv.stride == (1, 1)
        assert (_identity_branch(block) is not None) == fits


@pytest.mark.parametrize("name,count", [
    ("mobileone_s0", 17 + 18),  # 17 stride-1 depthwise; the S0 stem width (48) equals stage 1's
    ("mobileone_s1", 17 + 17),
    ("repvgg_a0", 1 + 3 + 13),  # every block but the first of each stage
    ("repvgg_b0", 3 + 5 + 15),
])
def test_identity_branch_count(name, count):
    assert sum(_identity_branch(b) is not None for b in blocks(meta_model(name)).values()) == count


@pytest.mark.parametrize("name", MOBILEONE)
def test_se_where_the_reference_puts_it(name):
    with_se = {path for path, b in blocks(meta_model(name)).items() if isinstance(b.se, SEBlock)}
    expected = set()
    if name == "mobileone_s4":  # last 5 dw+pw pairs of stage 3 (blocks 10..19) and all of stage 4
        expected = {f"stage3.{i}" for i in range(10, 20)} | {"stage4.0", "stage4.1"}
    assert with_se == expected


def test_se_width_matches_reference():
    se = meta_model("mobileone_s4").stage4[1].se
    assert (se.reduce.in_channels, se.reduce.out_channels, se.expand.out_channels) == (2048, 128, 2048)


@pytest.mark.parametrize("name,convs", [("mobileone_s1", 43), ("mobileone_s4", 43), ("repvgg_a0", 22),
                                        ("repvgg_b3", 28)])
def test_fused_conv_count(name, convs):
    assert fused_conv_count(meta_model(name)) == convs


@pytest.mark.parametrize("name,params_m", [("mobileone_s1", 4.76), ("repvgg_a0", 8.31)])
def test_deploy_params_known_values(name, params_m):
    assert deploy_params(meta_model(name)) / 1e6 == pytest.approx(params_m, rel=0.01)


@pytest.mark.parametrize("name", NAMES)
def test_deploy_params_match_paper(name):
    assert deploy_params(meta_model(name)) / 1e6 == pytest.approx(zoo.get(name).paper["params_m"], rel=0.02)


@pytest.mark.parametrize("name", NAMES)
def test_deploy_macs_match_paper(name):
    paper = zoo.get(name).paper["macs_m"]
    # MobileOne gives MACs to 3-4 digits; RepVGG gives GFLOPs to one decimal, hence +-50 M.
    assert deploy_macs(meta_model(name)) / 1e6 == pytest.approx(paper, abs=max(0.005 * paper, 50))


@pytest.mark.parametrize("name,train_keys,deploy_keys", [
    ("mobileone_s0", ["stage0.rbr_conv.0.conv.weight", "stage0.rbr_scale.bn.running_var",
                      "stage1.1.rbr_skip.num_batches_tracked", "stage1.0.rbr_conv.3.bn.weight", "linear.bias"],
     ["stage0.reparam_conv.weight", "stage4.1.reparam_conv.bias", "linear.weight"]),
    ("mobileone_s4", ["stage3.10.se.reduce.weight", "stage4.1.se.expand.bias"],
     ["stage3.10.reparam_conv.bias", "stage3.10.se.reduce.weight", "stage4.1.se.expand.bias"]),
    ("repvgg_a0", ["stage0.rbr_dense.conv.weight", "stage0.rbr_1x1.bn.bias", "stage1.1.rbr_identity.running_mean"],
     ["stage0.rbr_reparam.weight", "stage3.13.rbr_reparam.bias", "linear.weight"]),
])
def test_state_dict_names_follow_reference(name, train_keys, deploy_keys):
    model = zoo.create(name, num_classes=10)
    assert set(train_keys) <= set(model.state_dict())
    deployed = reparameterize(model)
    assert set(deploy_keys) <= set(deployed.state_dict())
    # The analytic counts above describe what the reparameterize pass really builds.
    assert not blocks(deployed)
    assert fused_conv_count(deployed) == fused_conv_count(model)
    assert sum(p.numel() for p in deployed.parameters()) == deploy_params(model)


@pytest.mark.parametrize("name,parent", CIFAR.items())
def test_cifar_variant_keeps_the_architecture_and_only_drops_the_stem_stride(name, parent):
    cifar, imagenet = meta_model(name), meta_model(parent)
    shapes = {k: v.shape for k, v in cifar.state_dict().items() if not k.startswith("linear")}
    assert shapes == {k: v.shape for k, v in imagenet.state_dict().items() if not k.startswith("linear")}
    assert main_conv(cifar.stage0).stride == (1, 1) and main_conv(imagenet.stage0).stride == (2, 2)
    assert zoo.get(name).num_classes == 10 and zoo.get(name).input_size == 32
    assert zoo.get(name).preprocess.resize is None
    out = {}
    cifar.stage4.register_forward_hook(lambda m, i, o: out.update(map=o.shape))
    cifar(torch.empty(1, 3, 32, 32, device="meta"))
    assert tuple(out["map"][2:]) == (2, 2)  # overall stride 16
