"""OpenVINO as a host runtime: explicit precision (f32 unless asked, so bf16 never happens silently), the
precision it really ran read back from the execution graph, int8 QDQ run in int8, clear errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from deploykit.core.compare import compare_outputs
from deploykit.core.errors import DeployKitError
from deploykit.export.onnx import export_onnx
from deploykit.export.quantize import Int8Quantizer, QuantizeConfig, prepare_for_quantization
from deploykit.runtimes.onnxruntime import OrtModel

ov = pytest.importorskip("openvino", reason='OpenVINO is optional: pip install "deploykit[openvino]"')
from deploykit.core.errors import import_backend  # noqa: E402
from deploykit.runtimes.openvino import OpenVINOModel, summarize  # noqa: E402


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                         nn.ReLU(), nn.Conv2d(16, 32, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 10)).eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ov")
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    export_onnx(small_net(), x, tmp / "float.onnx")
    prepared = prepare_for_quantization(tmp / "float.onnx", tmp / "prepared.onnx")
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(16)]
    qdq = Int8Quantizer(prepared, batches, workdir=tmp).quantize(QuantizeConfig(), tmp / "int8.onnx")
    return {"float": tmp / "float.onnx", "int8": qdq, "x": x.numpy()}


def test_float_runs_in_f32_when_asked_and_matches_onnxruntime(models):
    model = OpenVINOModel(models["float"], threads=2)
    record = model.precision_record()
    assert record["requested_hint"] == "f32" and record["inference_precision_hint"] == "f32"
    assert record["summary"] == "f32" and record["compute_layers"]["Convolution"] == {"f32": 3}
    reference = OrtModel(models["float"]).run(models["x"])
    assert compare_outputs(reference, model.run(models["x"]), "fp32")


def _has_bf16() -> bool:
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.skipif(not _has_bf16(), reason="this CPU has no bf16: OpenVINO's default is f32 here")
def test_default_hint_is_bf16_on_this_cpu_and_the_record_says_so(models):
    record = OpenVINOModel(models["float"], precision=None).precision_record()
    assert record["requested_hint"] is None and record["inference_precision_hint"] == "bf16"
    assert record["summary"] == "bf16"


def test_int8_qdq_runs_in_int8(models):
    model = OpenVINOModel(models["int8"])
    record = model.precision_record()
    assert record["summary"] == "int8", record
    assert set(record["compute_layers"]["Convolution"]) <= {"u8", "i8"}
    reference = OrtModel(models["float"]).run(models["x"])
    assert compare_outputs(reference, model.run(models["x"]), "int8").cosine > 0.98


def test_summary_of_mixed_precisions():
    assert summarize({"Convolution": {"u8": 40, "f32": 2}, "FullyConnected": {"i8": 1}}) == "mixed: 41 int8, 2 f32"
    assert summarize({"Convolution": {"bf16": 3}}) == "bf16" and summarize({}) == "none"


def test_errors_are_one_readable_line(models, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    with pytest.raises(DeployKitError) as info:
        OpenVINOModel(bad)
    assert "Exception from src" not in info.value.message and str(bad) in info.value.message
    with pytest.raises(DeployKitError, match="unknown OpenVINO precision hint 'fp8'"):
        OpenVINOModel(models["float"], precision="fp8")


def test_missing_openvino_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import now raises ImportError
    with pytest.raises(DeployKitError) as info:
        import_backend("openvino", "openvino")
    assert 'pip install "deploykit[openvino]"' in info.value.fix
