"""Recipes: validated against the registries before anything runs; every error names the key and the line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from deploykit.core.config import ConfigError
from deploykit.core.paths import project_root
from deploykit.core.thresholds import Thresholds
from deploykit.passes.fold_bn import FoldBNConfig
from deploykit.pipeline.recipe import load_recipe

RECIPES = sorted((project_root() / "recipes").glob("*.yaml"))

GOOD = """\
model: resnet20_cifar
data: {eval: cifar10/test, limit: 50}
devices: [host-cpu-ort]
thresholds:
  max_top1_drop: 0.01
  min_agreement: 0.99
  max_latency_ms: {host-cpu-ort: 100}
stages:
  - name: folded
    passes: [reparameterize, fold_bn]
  - name: wide
    options: {opset: 18}
    thresholds: {min_agreement: 0.95}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_good_recipe_loads_into_frozen_types(tmp_path, data_dir):
    recipe = load_recipe(_write(tmp_path, GOOD))
    assert recipe.name == "recipe" and recipe.model == "resnet20_cifar"
    assert recipe.data.eval == (data_dir / "cifar10/test").resolve() and recipe.data.limit == 50
    assert Path(recipe.weights).name.startswith("resnet20-")  # `default`: the zoo's released weights
    assert [p.name for p in recipe.stages[0].passes] == ["reparameterize", "fold_bn"]
    assert recipe.stages[0].passes[1].config == FoldBNConfig()  # validated against the registered type
    assert recipe.thresholds_for("wide") == Thresholds(0.01, 0.95, None, {"host-cpu-ort": 100.0})
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.model = "other"


CASES = {  # case: ((text in GOOD, replacement), expected message)
    "unknown key": (("model: resnet20_cifar", "modle: resnet20_cifar"),
                    "recipe.yaml:1: Recipe: unknown key 'modle'"),
    "wrong type": (("limit: 50", "limit: fifty"),
                   "recipe.yaml:2: Recipe.data.limit: expected int, got 'fifty'"),
    "missing model": (("model: resnet20_cifar\n", ""),
                      "recipe.yaml:1: Recipe: missing required key 'model'"),
    "unknown model": (("resnet20_cifar", "resnet21_cifar"),
                      "recipe.yaml:1: Recipe.model: unknown model 'resnet21_cifar'"),
    "unknown pass": (("fold_bn]", "fold_bnn]"),
                     "recipe.yaml:10: Recipe.stages.0.passes.1: unknown pass 'fold_bnn'; did you mean fold_bn?"),
    "unknown pass option": (("[reparameterize,", "[{reparameterize: {colour: red}},"),
                            "recipe.yaml:10: Recipe.stages.0.passes.0.reparameterize: unknown key 'colour'"),
    "bad pass option value": (("[reparameterize,", "[{prune_channels: {ratio: 2}}, reparameterize,"),
                              "recipe.yaml:10: Recipe.stages.0.passes.0.prune_channels: pruning ratio must be"),
    "pass without its required options": (("[reparameterize,", "[prune_channels, reparameterize,"),
                                          "recipe.yaml:10: Recipe.stages.0.passes.0: pass 'prune_channels' "
                                          "needs options"),
    "option of another target": (("{opset: 18}", "{opset: 18, workspace: 64}"),
                                 "recipe.yaml:12: Recipe.stages.1.options.workspace: target 'onnx' takes no option"),
    "unknown target": (("options: {opset: 18}", "target: tflite"),
                       "recipe.yaml:12: Recipe.stages.1.target: unknown target 'tflite'"),
    "unknown parent": (("options: {opset: 18}", "parent: pruned"),
                       "recipe.yaml:12: Recipe.stages.1.parent: parent 'pruned' is not a stage above this one"),
    "missing data": (("cifar10/test", "cifar10/tset"),
                     "recipe.yaml:2: Recipe.data.eval: cifar10/tset not found"),
    "unknown device": (("[host-cpu-ort]", "[host-cpu]"),
                       "recipe.yaml:3: Recipe.devices.0: unknown device 'host-cpu'"),
    "threshold out of range": (("max_top1_drop: 0.01", "max_top1_drop: 1.5"),
                               "recipe.yaml:5: Recipe.thresholds: max_top1_drop is a fraction"),
    "latency of an unlisted device": (("{host-cpu-ort: 100}", "{host-cpu-ort: 100, jetson: 5}"),
                                      "recipe.yaml:7: Recipe.thresholds.max_latency_ms.jetson: latency "
                                      "threshold for device 'jetson', which the recipe does not list"),
    "duplicate stage": (("name: wide", "name: folded"),
                        "recipe.yaml:11: Recipe.stages.1: duplicate stage name"),
    "reserved stage name": (("name: wide", "name: float"),
                            "recipe.yaml:11: Recipe.stages.1: 'float' is the implicit"),
    "duplicate key": (("  - name: wide\n", "  - name: wide\n    name: wider\n"),
                      "recipe.yaml:12: Recipe.stages.1: duplicate key 'name'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_recipe_names_key_and_line(tmp_path, data_dir, case):
    (old, new), expected = CASES[case]
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        load_recipe(_write(tmp_path, GOOD.replace(old, new, 1)))
    assert expected in info.value.message


def test_shipped_recipes_cover_the_issue_models():
    assert {p.stem for p in RECIPES} >= {"mobileone_s1", "repvgg_a0", "resnet56_cifar", "efficientnet_lite0"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipes_validate(path, data_dir):
    recipe = load_recipe(path)
    assert recipe.stages[0].name == "folded"
    assert recipe.devices and all(d in recipe.devices for t in [recipe.thresholds] for d in t.max_latency_ms)
