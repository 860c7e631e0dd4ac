"""VoVNet: deploy form equals training form; OSA modules aggregate once; shapes at odd resolutions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deploykit import zoo
from deploykit.zoo.vovnet import LAYERS_PER_MODULE, OSAModule

NAMES = ["vovnet27_slim", "vovnet39", "vovnet57"]
# Training-form parameter counts of the authors' reference code (github.com/stigma0617/VoVNet.pytorch),
# measured by building it; the paper prints no classification figures to compare with.
REFERENCE_PARAMS = {"vovnet27_slim": 3_525_736, "vovnet39": 22_600_296, "vovnet57": 36_640_296}


def _build(name: str, **kwargs) -> nn.Module:
    entry = zoo.MODELS.get(name)  # registered on import of the family module
    return entry.builder(num_classes=entry.num_classes, **kwargs).eval()


@pytest.mark.parametrize("name", NAMES)
def test_params_match_reference_implementation(name):
    assert sum(p.numel() for p in _build(name).parameters()) == REFERENCE_PARAMS[name]


def test_osa_module_concatenates_input_and_all_layers_once():
    module = OSAModule(16, 8, 32, residual=False)
    assert len(module.layers) == LAYERS_PER_MODULE
    assert module.transition.conv.in_channels == 16 + LAYERS_PER_MODULE * 8


def test_residual_only_on_repeated_modules():
    stage = _build("vovnet57").stages[2]  # max-pool + 4 OSA modules
    osa = [m for m in stage if isinstance(m, OSAModule)]
    assert [m.residual for m in osa] == [False, True, True, True]


def test_odd_resolution_uses_ceil_mode_pooling():
    model = _build("vovnet27_slim")
    features = model.stages(model.stem(torch.randn(1, 3, 65, 65)))
    # stem: 65 -> 33 -> 17; ceil-mode pools: 17 -> 8 -> 4 -> 2 (floor mode would end at 1x1)
    assert features.shape[-2:] == (2, 2)
