"""MobileOne and RepVGG load the reference repos' and timm's checkpoints, unfused or fused.

The expected key lists are written here from the public reference code, independently of
`deploykit.zoo.layouts`: apple/ml-mobileone mobileone.py (MobileOneBlock: `se`, `rbr_skip`, `rbr_conv.N`,
`rbr_scale`, fused `reparam_conv`; MobileOne: `stage0`..`stage4`, `linear`), DingXiaoH/RepVGG repvgg.py
(`rbr_identity`, `rbr_dense`, `rbr_1x1`, fused `rbr_reparam`) and timm/models/byobnet.py (ByobNet: `stem`,
`stages.i.j`, `head.fc`; MobileOneBlock / RepVggBlock: `identity`, `conv_kxk`, `conv_scale` / `conv_1x1`,
`attn.fc1`/`attn.fc2` (timm SEModule), fused `reparam_conv`). Both layouts are generated block by block in
the same order, so zipping them maps a checkpoint from one to the other without the code under test.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from deploykit import zoo
from deploykit.core.compare import compare_outputs
from deploykit.core.errors import DeployKitError
from deploykit.passes import reparameterize
from deploykit.passes.reparameterize import is_multibranch
from deploykit.pipeline.weights import load_weights
from deploykit.zoo.layouts import MOBILEONE_LAYOUTS, REPVGG_LAYOUTS
from tests.conftest import randomize_bn

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
BASE = (64, 128, 256, 512)

# Each layout's names for the same things. MobileOne: skip, conv branches, scale, SE reduce/expand.
# RepVGG: identity, 3x3, 1x1. Both: stem, stage i (0-based), fused conv, classifier.
NAMES = {
    ("mobileone", "official"): {"stem": "stage0", "stage": "stage{}", "skip": "rbr_skip", "conv": "rbr_conv",
                                "scale": "rbr_scale", "se": ("se.reduce", "se.expand"),
                                "fused": "reparam_conv", "head": "linear"},
    ("mobileone", "timm"): {"stem": "stem", "stage": "stages.{}", "skip": "identity", "conv": "conv_kxk",
                            "scale": "conv_scale", "se": ("attn.fc1", "attn.fc2"), "fused": "reparam_conv",
                            "head": "head.fc"},
    ("repvgg", "official"): {"stem": "stage0", "stage": "stage{}", "skip": "rbr_identity",
                             "dense": "rbr_dense", "one": "rbr_1x1", "fused": "rbr_reparam", "head": "linear"},
    ("repvgg", "timm"): {"stem": "stem", "stage": "stages.{}", "skip": "identity", "dense": "conv_kxk",
                         "one": "conv_1x1", "fused": "reparam_conv", "head": "head.fc"},
}

# (widths, conv branches, SE blocks in stages 3 and 4): apple/ml-mobileone PARAMS.
MOBILEONE = {"mobileone_s0": ((0.75, 1.0, 1.0, 2.0), 4, (0, 0)),
             "mobileone_s1": ((1.5, 1.5, 2.0, 2.5), 1, (0, 0)),
             "mobileone_s4": ((3.0, 3.5, 3.5, 4.0), 1, (5, 1))}
# (blocks per stage, widths): DingXiaoH/RepVGG create_RepVGG_*.
REPVGG = {"repvgg_a0": ((2, 4, 14, 1), (0.75, 0.75, 0.75, 2.5)), "repvgg_b0": ((4, 6, 16, 1), (1, 1, 1, 2.5))}


def _bn(prefix: str) -> list[str]:
    return [f"{prefix}.{suffix}" for suffix in BN]


def _conv_bn(prefix: str) -> list[str]:
    return [f"{prefix}.conv.weight", *_bn(f"{prefix}.bn")]


def mobileone_keys(name: str, layout: str, *, deploy: bool) -> list[str]:
    n = NAMES[("mobileone", layout)]
    widths, branches, (se3, se4) = MOBILEONE[name]
    channels = min(64, int(64 * widths[0]))
    blocks = [(n["stem"], 3, channels, 3, 2, False, 1)]  # the stem: one branch, no SE
    for i, (base, width, depth, se) in enumerate(zip(BASE, widths, (2, 8, 10, 1), (0, 0, se3, se4))):
        planes = int(base * width)
        stage = n["stage"].format(i + (layout == "official"))
        for j in range(depth):
            use_se = j >= depth - se
            blocks.append((f"{stage}.{2 * j}", channels, channels, 3, 2 if j == 0 else 1, use_se, branches))
            blocks.append((f"{stage}.{2 * j + 1}", channels, planes, 1, 1, use_se, branches))
            channels = planes
    keys = []
    for prefix, cin, cout, kernel, stride, use_se, k in blocks:
        if use_se:
            keys += [f"{prefix}.{part}.{p}" for part in n["se"] for p in ("weight", "bias")]
        if deploy:
            keys += [f"{prefix}.{n['fused']}.weight", f"{prefix}.{n['fused']}.bias"]
            continue
        if cin == cout and stride == 1:
            keys += _bn(f"{prefix}.{n['skip']}")
        keys += [key for b in range(k) for key in _conv_bn(f"{prefix}.{n['conv']}.{b}")]
        if kernel > 1:
            keys += _conv_bn(f"{prefix}.{n['scale']}")
    return keys + [f"{n['head']}.weight", f"{n['head']}.bias"]


def repvgg_keys(name: str, layout: str, *, deploy: bool) -> list[str]:
    n = NAMES[("repvgg", layout)]
    depths, widths = REPVGG[name]
    channels = min(64, int(64 * widths[0]))
    blocks = [(n["stem"], 3, channels, 2)]
    for i, (base, width, depth) in enumerate(zip(BASE, widths, depths)):
        planes = int(base * width)
        stage = n["stage"].format(i + (layout == "official"))
        for j in range(depth):
            blocks.append((f"{stage}.{j}", channels, planes, 2 if j == 0 else 1))
            channels = planes
    keys = []
    for prefix, cin, cout, stride in blocks:
        if deploy:
            keys += [f"{prefix}.{n['fused']}.weight", f"{prefix}.{n['fused']}.bias"]
            continue
        if cin == cout and stride == 1:
            keys += _bn(f"{prefix}.{n['skip']}")
        keys += _conv_bn(f"{prefix}.{n['dense']}") + _conv_bn(f"{prefix}.{n['one']}")
    return keys + [f"{n['head']}.weight", f"{n['head']}.bias"]


def reference_keys(name: str, layout: str, *, deploy: bool) -> list[str]:
    keys = (mobileone_keys if name.startswith("mobileone") else repvgg_keys)(name, layout, deploy=deploy)
    assert len(set(keys)) == len(keys)
    return keys


@pytest.mark.parametrize("name", [*MOBILEONE, *REPVGG])
def test_our_names_are_the_reference_names(name):
    model = zoo.create(name)
    assert set(model.state_dict()) == set(reference_keys(name, "official", deploy=False))
    assert set(reparameterize(model).state_dict()) == set(reference_keys(name, "official", deploy=True))


@pytest.mark.parametrize("timm_key, ours", [
    ("stem.conv_kxk.0.conv.weight", "stage0.rbr_conv.0.conv.weight"),
    ("stages.0.1.identity.running_var", "stage1.1.rbr_skip.running_var"),
    ("stages.2.19.attn.fc2.bias", "stage3.19.se.expand.bias"),
    ("stages.3.0.conv_scale.bn.num_batches_tracked", "stage4.0.rbr_scale.bn.num_batches_tracked"),
    ("stages.3.1.reparam_conv.weight", "stage4.1.reparam_conv.weight"),
    ("head.fc.bias", "linear.bias"),
])
def test_timm_mobileone_keys(timm_key, ours):
    assert MOBILEONE_LAYOUTS[1].rename(timm_key) == ours


@pytest.mark.parametrize("timm_key, ours", [
    ("stem.conv_1x1.conv.weight", "stage0.rbr_1x1.conv.weight"),
    ("stages.2.13.identity.bias", "stage3.13.rbr_identity.bias"),
    ("stages.1.0.conv_kxk.bn.running_mean", "stage2.0.rbr_dense.bn.running_mean"),
    ("stem.reparam_conv.bias", "stage0.rbr_reparam.bias"),
    ("head.fc.weight", "linear.weight"),
])
def test_timm_repvgg_keys(timm_key, ours):
    assert REPVGG_LAYOUTS[1].rename(timm_key) == ours


@pytest.fixture(scope="module")
def trained():
    """Per model: a training-form model with random weights and well-conditioned random BN statistics."""
    cache = {}

    def get(name: str):
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = randomize_bn(zoo.create(name), seed=1, input_shape=(64, 3, 64, 64))
        return cache[name]

    return get


def checkpoint(model, name: str, layout: str, *, deploy: bool) -> dict:
    """`model`'s tensors under the reference layout's keys, mapped by position in the generated lists."""
    ours = (reparameterize(model) if deploy else model).state_dict()
    official, target = (reference_keys(name, layout_, deploy=deploy) for layout_ in ("official", layout))
    assert set(official) == set(ours)
    return {key: ours[source].clone() for source, key in zip(official, target)}


LAYOUT_NAMES = {("mobileone", "official"): MOBILEONE_LAYOUTS[0].name, ("mobileone", "timm"): "timm ByobNet",
                ("repvgg", "official"): REPVGG_LAYOUTS[0].name, ("repvgg", "timm"): "timm ByobNet"}


@pytest.mark.parametrize("deploy", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("layout", ["official", "timm"])
@pytest.mark.parametrize("name", ["mobileone_s1", "repvgg_a0"])
def test_checkpoint_loads_with_the_same_outputs(name, layout, deploy, trained, tmp_path):
    model = trained(name)
    state = checkpoint(model, name, layout, deploy=deploy)
    # The reference repos ship torch.save pickles (apple: `.pth.tar`); timm's hub ships safetensors.
    path = tmp_path / ("w.pth.tar" if layout == "official" else "model.safetensors")
    torch.save(state, path) if layout == "official" else save_file(state, str(path))

    loaded = load_weights(name, zoo.create(name), path)

    family = name.split("_")[0]
    assert loaded.layout == LAYOUT_NAMES[(family, layout)]
    assert loaded.form == ("deploy" if deploy else "training")
    assert any(is_multibranch(m) for m in loaded.model.modules()) == (not deploy)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        result = compare_outputs(model(x).numpy(), loaded.model(x).numpy(), "fp32")
    assert result, result.summary()


def test_wrong_family_names_keys_and_layouts(trained, tmp_path):
    torch.save(trained("repvgg_a0").state_dict(), tmp_path / "repvgg.pth")
    with pytest.raises(DeployKitError) as info:
        load_weights("mobileone_s0", zoo.create("mobileone_s0"), tmp_path / "repvgg.pth")
    message = str(info.value)
    assert "missing keys: stage0.rbr_conv.0.bn.bias" in message
    assert "unexpected keys: stage0.rbr_1x1" in message
    assert ("layouts tried: apple/ml-mobileone (our names), timm ByobNet, each in training and deploy form"
            in message)


def test_error_reports_against_the_closest_layout(trained, tmp_path):
    state = checkpoint(trained("repvgg_a0"), "repvgg_a0", "timm", deploy=False)
    del state["head.fc.weight"]
    save_file(state, str(tmp_path / "cut.safetensors"))
    expected = r"closest: timm ByobNet\) do not fit the model\n  1 missing keys: linear.weight\n"
    with pytest.raises(DeployKitError, match=expected):
        load_weights("repvgg_a0", zoo.create("repvgg_a0"), tmp_path / "cut.safetensors")
