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
from deploykit.pipeline.weights import build_model
from deploykit.zoo.structure import (STRUCTURE_KEY, apply_structure, describe_structure, read_structure,
                                     structure_metadata)


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


CONV = {"type": "Conv2d", "in": 16, "out": 8, "groups": 1}


@pytest.mark.parametrize("layers,expected", [
    ({"layer1.0.conv1": {**CONV, "in": "abc"}}, "in 'abc' is not a width between 1 and the unpruned model's 16"),
    ({"layer1.0.conv1": {**CONV, "out": -8}}, "out -8 is not a width between 1 and the unpruned model's 16"),
    ({"layer1.0.conv1": {**CONV, "out": 120_000}}, "out 120000 is not a width between 1"),  # 14.4 GB asked
    ({"layer1.0.conv1": {**CONV, "out": True}}, "out True is not a width"),
    ({"layer1.0.conv1": {**CONV, "groups": 3}}, "groups 3 is not a width between 1 and the unpruned model's 1"),
    ({"layer1.0.conv1": {"type": "Conv2d", "in": 16}}, "does not describe a Conv2d"),
    ({"layer1.0.conv1": [1, 2]}, "does not describe a Conv2d"),
    ({"layer1.0.bn1": {"type": "BatchNorm2d", "features": 0}}, "features 0 is not a width"),
    ({"linear": {"type": "Linear", "in": 64, "out": 1_000_000}}, "out 1000000 is not a width between 1"),
    ({"": CONV}, "names a layer '' this model does not have"),
    ([1, 2], "it is not"),
])
def test_a_malformed_structure_header_is_refused_before_anything_is_built(tmp_path, layers, expected):
    """The header was trusted: a 1 MB file asked for 14.4 GB, `"in": "abc"` or a negative width ended as
    an internal error (issue 15, item 12)."""
    path = tmp_path / "p.safetensors"
    save_file({"x": torch.zeros(1)}, str(path),
              metadata={STRUCTURE_KEY: json.dumps({"model": "resnet20_cifar", "layers": layers})})
    with pytest.raises(DeployKitError) as err:
        build_model("resnet20_cifar", path)
    assert expected in err.value.message and err.value.fix


def test_a_deeply_nested_structure_header_is_refused(tmp_path):
    path = tmp_path / "deep.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={STRUCTURE_KEY: "[" * 100_000 + "]" * 100_000})
    with pytest.raises(DeployKitError, match="header is invalid: not JSON"):
        build_model("resnet20_cifar", path)
