"""Pruned models rebuild from their weights file: the structure in the safetensors header thins the zoo
model before a strict load."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from deploykit import zoo
from deploykit.core.errors import DeployKitError
from deploykit.passes.prune import prune_channels
from deploykit.zoo.structure import (STRUCTURE_KEY, apply_structure, build_model, describe_structure,
                                     read_structure, structure_metadata)


def _pruned(name: str = "resnet20_cifar"):
    torch.manual_seed(0)
    model = zoo.create(name)
    return model, prune_channels(model, torch.zeros(1, 3, 32, 32), ratio=0.5)


def test_structure_lists_only_changed_layers_and_rebuilds():
    model, pruned = _pruned()
    structure = describe_structure(pruned, model, "resnet20_cifar")
    assert structure["layers"]["layer1.0.conv1"] == {"type": "Conv2d", "in": 16, "out": 8, "groups": 1}
    assert "layer1.0.conv2" in structure["layers"] and "conv1" not in structure["layers"]
    rebuilt = apply_structure(zoo.create("resnet20_cifar"), structure)
    rebuilt.load_state_dict(pruned.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(rebuilt.eval()(x), pruned.eval()(x))


def test_weights_file_round_trip(tmp_path):
    model, pruned = _pruned("mobileone_s0_cifar")
    path = tmp_path / "p.safetensors"
    save_file({k: v.contiguous() for k, v in pruned.state_dict().items()}, str(path),
              metadata=structure_metadata(describe_structure(pruned, model, "mobileone_s0_cifar")))
    assert read_structure(path)["model"] == "mobileone_s0_cifar"
    loaded = build_model("mobileone_s0_cifar", path)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(loaded(x), pruned.eval()(x))


def test_unpruned_model_stores_no_structure():
    model = zoo.create("resnet20_cifar")
    assert structure_metadata(describe_structure(model, zoo.create("resnet20_cifar"), "resnet20_cifar")) == {}


def test_structure_of_another_model_is_refused(tmp_path):
    _, pruned = _pruned("mobileone_s0_cifar")
    structure = describe_structure(pruned, zoo.create("mobileone_s0_cifar"), "mobileone_s0_cifar")
    with pytest.raises(DeployKitError, match="mobileone_s0_cifar"):
        apply_structure(zoo.create("resnet20_cifar"), structure)
    assert json.loads(structure_metadata(structure)[STRUCTURE_KEY]) == structure
