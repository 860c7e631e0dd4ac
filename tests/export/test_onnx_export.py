"""ONNX export of every zoo model: ORT parity against the training form, no BatchNormalization left."""

from __future__ import annotations

import onnx
import pytest
import torch

from deploykit import zoo
from deploykit.core.manifest import Manifest, manifest_path
from deploykit.core.fsutil import sha256_file
from deploykit.pipeline.export import ExportRequest, export
from deploykit.zoo.checkpoint import read_state_dict
from tests.conftest import randomize_bn

# One model per family in the default run: the ONNX export of each family's blocks. Every other zoo model is
# exported in the slow run; that each one's deploy form equals its training form is checked by default in
# tests/zoo/test_zoo_deploy.py (PyTorch, no export), so the default run still covers every model's folds.
PER_FAMILY = {"resnet20_cifar", "mobileone_s0", "repvgg_a0", "mobilenet_v1_025", "vovnet27_slim",
              "efficientnet_lite0"}
ZOO = [n if n in PER_FAMILY else pytest.param(n, marks=pytest.mark.slow) for n in zoo.names()]


def test_every_family_is_exported_by_default():
    assert {zoo.get(n).family for n in PER_FAMILY} == {zoo.get(n).family for n in zoo.names()}


def _random_bn_weights(name: str, path, num_classes: int = 10):
    """A safetensors checkpoint with random BN statistics, so parity is tested on non-trivial folds."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = randomize_bn(zoo.create(name, num_classes=num_classes), seed=3, input_shape=(64, 3, 64, 64))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("name", ZOO)
def test_export_parity_and_no_batchnorm(name, tmp_path):
    outcome = _exported(name, tmp_path)
    assert outcome.build.parity.passed and outcome.build.parity.max_rel_err <= 1e-4
    assert outcome.build.details["op_counts"].get("BatchNormalization", 0) == 0
    graph = onnx.load(str(outcome.artifact))
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 64]


def _exported(name: str, tmp_path):
    """Zoo model `name` with random BN statistics, exported at 64x64 (once per session: a test reading its
    manifest reuses the parity test's export)."""
    if name not in _EXPORTS:
        weights = _random_bn_weights(name, tmp_path / "w.safetensors")
        _EXPORTS[name] = export(ExportRequest(model=name, weights=weights, out_dir=tmp_path / "out", input_size=64,
                                              num_classes=10)), weights
    return _EXPORTS[name][0]


_EXPORTS: dict = {}


def test_manifest_records_provenance(tmp_path):
    outcome = _exported("repvgg_a0", tmp_path)
    weights, tmp_path = _EXPORTS["repvgg_a0"][1], outcome.artifact.parent
    manifest = Manifest.read(manifest_path(outcome.artifact))
    assert manifest.sha256 == sha256_file(outcome.artifact)
    assert manifest.weights_sha256 == sha256_file(weights)
    assert [p.name for p in manifest.passes] == ["reparameterize", "fold_bn"]
    assert {"torch", "onnx", "onnxruntime", "deploykit"} <= set(manifest.versions)
    assert manifest.parity["passed"] and manifest.preprocess["input_size"] == 64
    assert not list(tmp_path.glob(".deploykit-*")), "staging directory left behind"


@pytest.mark.slow
def test_deploy_graph_structure_at_224(tmp_path):
    """The acceptance figures: conv counts and parameter totals of the deploy graphs. By default,
    tests/test_readme.py checks mobileone_s1's 43 Conv at 224 and tests/profile/test_cost.py every deploy
    form's parameter count."""
    expected = {"mobileone_s1": (43, 4.76e6), "repvgg_a0": (22, 8.31e6)}
    for name, (convs, params) in expected.items():
        outcome = export(ExportRequest(model=name, out_dir=tmp_path))
        assert outcome.build.details["op_counts"]["Conv"] == convs
        graph = onnx.load(str(outcome.artifact)).graph
        total = sum(int(torch.tensor(list(t.dims)).prod()) if t.dims else 1 for t in graph.initializer)
        assert abs(total - params) / params < 0.01, (name, total)


def test_checkpoint_round_trip_pth(tmp_path):
    model = randomize_bn(zoo.create("mobileone_s0", num_classes=10))
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "w.pth")
    state = read_state_dict(tmp_path / "w.pth")
    assert set(state) == set(model.state_dict())


def test_dynamic_batch_runs_at_any_batch_and_int8_refuses_it(tmp_path):
    import numpy as np

    from deploykit.core.compare import compare_outputs
    from deploykit.core.errors import DeployKitError
    from deploykit.runtimes.onnxruntime import OrtModel

    outcome = export(ExportRequest(model="resnet20_cifar", out_dir=tmp_path, random_init=True,
                                   options={"dynamic_batch": True}))
    graph_input = onnx.load(str(outcome.artifact)).graph.input[0]
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert outcome.manifest.extra["dynamic_batch"] is True
    single = OrtModel(outcome.artifact, threads=1)
    x = torch.randn(5, 3, 32, 32).numpy()
    batched = single.run(x)
    one_by_one = np.concatenate([single.run(x[i:i + 1]) for i in range(5)])
    assert batched.shape == (5, 10) and compare_outputs(one_by_one, batched, "fp32")
    with pytest.raises(DeployKitError, match="--dynamic-batch is fp32 only"):
        export(ExportRequest(model="resnet20_cifar", out_dir=tmp_path / "q", random_init=True,
                             options={"dynamic_batch": True, "int8": True, "calib": tmp_path}))
    assert not (tmp_path / "q" / "resnet20_cifar.int8.onnx").exists()


def test_fp16_is_a_precision_of_the_onnx_target(data_dir, tmp_path):
    """--precision fp16: an fp16 graph with fp32 inputs/outputs, its own file name, fp16 parity vs PyTorch
    (released resnet20 weights: trained activations, as fp16 meets them in deployment)."""
    outcome = export(ExportRequest(model="resnet20_cifar", out_dir=tmp_path / "out", options={"precision": "fp16"}))
    assert outcome.artifact.name == "resnet20_cifar.fp16.onnx" and outcome.manifest.precision == "fp16"
    model = onnx.load(str(outcome.artifact))
    weight_types = {i.data_type for i in model.graph.initializer if i.data_type in (1, 10)}
    assert weight_types == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    parity = outcome.build.parity
    assert parity.passed and parity.precision == "fp16" and outcome.build.details["float_parity"]["passed"]
    assert "fp16_range" in outcome.build.details


def test_onnx_precision_mistakes_are_one_message(tmp_path):
    from deploykit.core.errors import DeployKitError

    for options, message in (({"precision": "int4"}, "invalid --precision int4"),
                             ({"precision": "fp16", "int8": True}, "contradict"),
                             ({"calib_method": "minmax"}, "only apply to int8")):
        with pytest.raises(DeployKitError, match=message):
            export(ExportRequest(model="resnet20_cifar", random_init=True, out_dir=tmp_path, options=options))
    assert not any(tmp_path.rglob("*.onnx"))
