"""Recipes name the litert and executorch targets: each stage's artifact is planned on the devices whose
runtime runs it (a .tflite on LiteRT devices, a .pte on ExecuTorch ones, never in ONNX Runtime), phones
only when selected; `deploykit check` runs them end to end (slow)."""

from __future__ import annotations

import importlib.util

import pytest

from deploykit.pipeline.cache import PipelineCache
from deploykit.pipeline.plan import make_plan
from deploykit.pipeline.recipe import load_recipe
from tests.cli.test_run_check import deploykit

RECIPE = """\
model: resnet20_cifar
data: {{eval: {eval}, limit: 64}}
devices: [host-cpu-ort, host-cpu-litert, host-cpu-executorch, pixel6-litert]
profile: {{runs: 3, warmup: 1, batches: [1]}}
thresholds:
  min_agreement: 0.99
stages:
  - name: folded
    passes: [reparameterize, fold_bn]
  - name: tflite
    parent: folded
    target: litert
  - name: pte
    parent: folded
    target: executorch
"""


def _recipe(tmp_path, data_dir):
    path = tmp_path / "edge.yaml"
    path.write_text(RECIPE.format(eval=data_dir / "cifar10/test"))
    return path


def test_each_target_is_measured_on_the_devices_of_its_runtime(tmp_path, data_dir):
    path = _recipe(tmp_path, data_dir)
    plan = make_plan(load_recipe(path), path, PipelineCache(tmp_path / "cache"))
    measured = {(m.stage, m.device): m.skip for m in plan.measures if m.stage != "float"}
    assert set(measured) == {("folded", "host-cpu-ort"), ("tflite", "host-cpu-litert"), ("tflite", "pixel6-litert"),
                             ("pte", "host-cpu-executorch")}
    assert measured[("tflite", "host-cpu-litert")] is None and "select it" in measured[("tflite", "pixel6-litert")]


@pytest.mark.slow
@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("litert_torch", "executorch")),
                    reason='needs pip install "deploykit[litert,executorch]"')
def test_check_builds_and_profiles_both_targets(tmp_path, data_dir):
    _recipe(tmp_path, data_dir)
    result = deploykit("check", "edge.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for stage in ("tflite", "pte"):
        assert stage in result.stdout
