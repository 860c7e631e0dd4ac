"""MobileNet v1: deploy form equals training form; size and cost match the paper's tables."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deploykit.zoo.mobilenet as mobilenet
from deploykit import zoo
from deploykit.profile.cost import count_cost

NAMES = ["mobilenet_v1", "mobilenet_v1_075", "mobilenet_v1_050", "mobilenet_v1_025"]


def _build(name: str, **kwargs) -> nn.Module:
    entry = zoo.MODELS.get(name)  # registered on import of the family module
    return entry.builder(num_classes=entry.num_classes, **kwargs).eval()


def _params_m(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def _macs_m(model: nn.Module, size: int) -> float:
    return count_cost(model, size).macs / 1e6


def _near_paper(actual: float, published: float) -> bool:
    """Within 2%, or within the rounding of the printed figure (the paper's "0.5 M" is one digit)."""
    decimals = len(repr(float(published)).split(".")[1].rstrip("0"))
    return abs(actual - published) <= max(0.02 * published, 0.5 * 10 ** -decimals)


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
