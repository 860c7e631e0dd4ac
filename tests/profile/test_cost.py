"""The cost model: hand-computed MACs / memory access on tiny nets, torch's FLOP counter as an independent
oracle, and every zoo model against its paper's params and MACs."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import deploykit.profile
from deploykit import zoo
from deploykit.core.errors import DeployKitError
from deploykit.pipeline.zoo_cost import PAPER_NOTES, compare_to_paper, deploy_model, paper_tolerance_pct
from deploykit.profile.cost import count_cost as cost

# The biggest models take seconds to build even on the meta device; they are covered in the slow run.
BIG = {"repvgg_b1", "repvgg_b2", "repvgg_b3", "vovnet57"}
ZOO = [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in zoo.names()]


def tiny_net() -> nn.Sequential:
    """On 3x8x8: a 3x3 stride-2 conv, a 3x3 depthwise conv, a 1x1 conv, pooling, a linear layer."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),  # -> 8x4x4
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise -> 8x4x4
        nn.Conv2d(8, 16, 1),  # -> 16x4x4
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 10),
    )


# Per layer, by hand (h_out·w_out = 16 for every conv):
#   MACs   = 16·9·3·8 = 3456 | 16·9·1·8 = 1152 | 16·1·8·16 = 2048 | 16·10 = 160
#   memory = 16·(3+8) + 9·3·8 = 392 | 16·(8+8) + 9·8 = 328 | 16·(8+16) + 8·16 = 512 | (16+10) + 16·10 = 186
#   params = 216 | 72+8 = 80 | 128+16 = 144 | 160+10 = 170
TINY_LAYERS = {"0": (3456, 392, 216), "2": (1152, 328, 80), "3": (2048, 512, 144), "6": (160, 186, 170)}


def test_tiny_net_by_hand():
    report = cost(tiny_net(), 8)
    assert report.input_shape == (1, 3, 8, 8)
    assert {l.name: (l.macs, l.memory_access, l.params) for l in report.layers} == TINY_LAYERS
    assert (report.macs, report.memory_access, report.params) == (6816, 1418, 610)


def test_tiny_net_layer_shapes():
    by_name = {layer.name: layer for layer in cost(tiny_net(), 8).layers}
    assert by_name["0"].in_shape == (1, 3, 8, 8) and by_name["0"].out_shape == (1, 8, 4, 4)
    assert (by_name["2"].kernel, by_name["2"].groups, by_name["2"].type) == ((3, 3), 8, "Conv2d")
    assert (by_name["6"].kernel, by_name["6"].type, by_name["6"].out_shape) == (None, "Linear", (1, 10))


def test_grouped_conv():
    # 8 -> 12 channels in 4 groups of 2 inputs, 6x6 kept: MACs 36·9·2·12, memory 36·(8+12) + 9·2·12.
    report = cost(nn.Conv2d(8, 12, 3, padding=1, groups=4), 6)
    assert (report.macs, report.memory_access, report.params) == (7776, 936, 228)


def test_non_square_input_and_channels_from_first_conv():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 1))
    report = cost(net, (6, 10))
    assert report.input_shape == (1, 1, 6, 10)
    assert report.layers[1].macs == 60 * 4 * 4


def test_elementwise_layers_add_params_but_no_macs():
    with_bn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    plain = cost(nn.Conv2d(3, 8, 3), 8)
    report = cost(with_bn, 8)
    assert (report.macs, report.memory_access) == (plain.macs, plain.memory_access)
    assert report.params == plain.params + 16


def test_shared_layer_counts_macs_per_call_params_once():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    report = cost(nn.Sequential(conv, conv), 5)
    assert [layer.macs for layer in report.layers] == [25 * 9 * 16] * 2
    assert sum(layer.params for layer in report.layers) == report.params == 148


def test_model_left_as_it_was():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).train()
    net[1].eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cost(net, 8)
    assert net.training and not net[1].training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not net[0]._forward_hooks


def test_no_conv_is_a_clear_error():
    with pytest.raises(DeployKitError, match="no convolution"):
        cost(nn.Linear(4, 2), 8)


def test_paper_tolerance_widens_for_rounded_figures():
    assert paper_tolerance_pct(569) == 2.0
    assert paper_tolerance_pct(1400) == pytest.approx(50 / 1400 * 100)  # "1.4 G"
    assert paper_tolerance_pct(0.5) == pytest.approx(10.0)  # "0.5 M"


def test_count_cost_is_a_plain_function_of_the_package_and_lazy():
    assert deploykit.profile.count_cost(tiny_net(), 8).macs == 6816
    assert deploykit.profile.count_cost is deploykit.profile.cost.count_cost
    code = "import sys, deploykit.profile; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@functools.lru_cache(maxsize=None)
def _compared(name: str):
    return compare_to_paper(name)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_params_match_paper(name):
    row = _compared(name)
    if row.paper_params_m is None:
        pytest.skip(f"{name}: the paper gives no parameter count")
    assert abs(row.params_delta_pct) <= paper_tolerance_pct(row.paper_params_m), \
        f"{name}: {row.report.params / 1e6:.3f}M vs paper {row.paper_params_m}M"


@pytest.mark.parametrize("name", ZOO)
def test_catalog_params_are_the_deploy_forms(name):
    """`deploykit models` prints deploykit/zoo/catalog.json, not a computation: it must not drift."""
    from deploykit.zoo.catalog import read_catalog

    listed = {row["name"]: row["params"] for row in read_catalog()}
    assert listed.get(name) == _compared(name).report.params, "rerun `python scripts/zoo_catalog.py`"


@pytest.mark.parametrize("name", ZOO)
def test_zoo_macs_match_paper(name, request):
    # The papers' "FLOPs" / "mult-adds" are all multiply-accumulates (see deploykit.profile.count_cost).
    row = _compared(name)
    if row.paper_macs_m is None:
        pytest.skip(f"{name}: the paper gives no MACs")
    if name in PAPER_NOTES:
        request.applymarker(pytest.mark.xfail(reason=PAPER_NOTES[name], strict=True))
    assert abs(row.macs_delta_pct) <= paper_tolerance_pct(row.paper_macs_m), \
        f"{name}: {row.report.macs / 1e6:.1f}M vs paper {row.paper_macs_m}M"


@pytest.mark.parametrize("name", ZOO)
def test_zoo_macs_match_torch_flop_counter(name):
    """An independent count: torch's FlopCounterMode reports 2 FLOPs per conv / matmul multiply-add."""
    report = _compared(name).report
    model = deploy_model(name, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(report.input_shape, device="meta"))
    assert report.macs == counter.get_total_flops() // 2
    assert sum(layer.macs for layer in report.layers) == report.macs
    assert sum(layer.memory_access for layer in report.layers) == report.memory_access
    assert sum(layer.params for layer in report.layers) == report.params  # deploy form: no BN left


def test_cli_prints_the_layer_table():
    result = subprocess.run([sys.executable, "-m", "deploykit", "models", "--layers", "resnet20_cifar"],
                            capture_output=True, text=True, timeout=300, check=True)
    assert "total" in result.stdout
    assert str(_compared("resnet20_cifar").report.macs) in result.stdout
