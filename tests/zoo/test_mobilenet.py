"""MobileNet v1: deploy form equals training form; size and cost match the paper's tables."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deploykit.zoo.mobilenet as mobilenet
from deploykit import zoo
from deploykit.core.compare import compare_outputs
from deploykit.passes import fold_bn, reparameterize
from tests.conftest import randomize_bn

NAMES = ["mobilenet_v1", "mobilenet_v1_075", "mobilenet_v1_050", "mobilenet_v1_025"]


def _build(name: str, **kwargs) -> nn.Module:
    entry = zoo.MODELS.get(name)  # registered on import of the family module
    return entry.builder(num_classes=entry.num_classes, **kwargs).eval()


def _deploy(model: nn.Module) -> nn.Module:
    return fold_bn(reparameterize(model))


def _params_m(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def _macs_m(model: nn.Module, size: int) -> float:
    """Multiply-adds of conv and linear layers, counted from one forward pass."""
    total = 0

    def count(module, _inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output[0].numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return total / 1e6


def _near_paper(actual: float, published: float) -> bool:
    """Within 2%, or within the rounding of the printed figure (the paper's "0.5 M" is one digit)."""
    decimals = len(repr(float(published)).split(".")[1].rstrip("0"))
    return abs(actual - published) <= max(0.02 * published, 0.5 * 10 ** -decimals)


@pytest.mark.parametrize("name", NAMES)
def test_deploy_form_equals_training_form(name):
    torch.manual_seed(0)
    model = randomize_bn(_build(name), seed=1)
    deployed = _deploy(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        result = compare_outputs(model(x).numpy(), deployed(x).numpy(), "fp32")
    assert result, result.summary()


@pytest.mark.parametrize("name", NAMES)
def test_params_and_macs_match_paper(name):
    paper = zoo.MODELS.get(name).paper
    deployed = _deploy(_build(name))
    assert _near_paper(_params_m(deployed), paper["params_m"])
    assert _near_paper(_macs_m(deployed, 224), paper["macs_m"])


@pytest.mark.parametrize("size", [192, 160, 128])
def test_macs_at_lower_resolution_match_paper(size):
    published = zoo.MODELS.get("mobilenet_v1").paper["macs_m_by_resolution"][size]
    assert _near_paper(_macs_m(_build("mobilenet_v1"), size), published)


def test_any_input_resolution():
    model = _build("mobilenet_v1_025")
    with torch.no_grad():
        assert model(torch.randn(1, 3, 97, 75)).shape == (1, 1000)


def test_width_kwarg_builds_the_named_variants():
    assert _params_m(_build("mobilenet_v1", width=0.5)) == _params_m(_build("mobilenet_v1_050"))


def test_width_must_be_positive():
    with pytest.raises(ValueError, match="width"):
        mobilenet.MobileNetV1(width=0)
