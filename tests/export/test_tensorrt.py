"""TensorRT target: the ONNX + plan artifact (checked here in ONNX Runtime), the refusal modes, and
the engine build and run where TensorRT and a CUDA GPU exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from deploykit.core.compare import compare_outputs
from deploykit.core.fsutil import sha256_file
from deploykit.core.manifest import Manifest, manifest_path
from deploykit.export.onnx import export_onnx
from deploykit.export.onnx_fp16 import convert_to_fp16
from deploykit.core.tensorrt_plan import BuildPlan
from deploykit.pipeline.export import ExportRequest, export
from deploykit.runtimes.onnxruntime import OrtModel
from deploykit.runtimes.tensorrt import engine_unavailable

NO_ENGINE = engine_unavailable()
# The documented trtexec flags (TensorRT 10 and 11): precision comes from the ONNX types
# (--stronglyTyped), workspace as --memPoolSize=workspace:<size>M, the timing cache as a file.
COMMON_FLAGS = ["trtexec", "--onnx=model.onnx", "--saveEngine=model.engine", "--stronglyTyped",
                "--memPoolSize=workspace:1024M", "--timingCacheFile=timing.cache"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploykit", "export", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def float_types(model) -> set[int]:
    return {init.data_type for init in model.graph.initializer if init.data_type in (1, 10)}


def check_plan(artifact: Path, precision: str) -> dict:
    plan = json.loads((artifact / "plan.json").read_text())
    onnx_path = artifact / plan["onnx"]
    assert plan["onnx_sha256"] == sha256_file(onnx_path)
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model, full_check=True)
    expected = COMMON_FLAGS + (["--noTF32"] if precision == "fp32" else [])
    assert plan["trtexec"] == " ".join(expected) and plan["precision"] == precision
    assert BuildPlan.read(artifact / "plan.json").trtexec() == expected
    assert "--fp16" not in plan["trtexec"] and "--int8" not in plan["trtexec"]  # removed in TensorRT 11
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [onnx.TensorProto.FLOAT]
    return plan


@pytest.mark.skipif(NO_ENGINE is None, reason="this machine can build engines; see the needs_gpu test")
# fp32 in the slow run: its file name is checked by tests/pipeline/test_overwrite.py, its ONNX is the plain
# float export every ONNX test makes; the CLI path and the plan are the same as fp16's
@pytest.mark.parametrize("precision", ["fp16", pytest.param("fp32", marks=pytest.mark.slow)])
def test_cli_writes_onnx_and_plan_and_says_build_on_target(precision, tmp_path):
    done = run_cli("mobileone_s1", "--target", "tensorrt", "--precision", precision, "--input-size", "64",
                   "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no TensorRT engine built here" in done.stdout and "GPU model and TensorRT version" in done.stdout
    artifact = tmp_path / ("mobileone_s1.trt" if precision == "fp16" else f"mobileone_s1.{precision}.trt")
    plan = check_plan(artifact, precision)
    assert plan["trtexec"] in done.stdout, "the command must print unbroken, ready to paste"
    assert sorted(p.name for p in artifact.iterdir()) == ["model.onnx", "plan.json"]
    model = onnx.load(str(artifact / "model.onnx"))
    assert float_types(model) == {onnx.TensorProto.FLOAT16 if precision == "fp16" else onnx.TensorProto.FLOAT}
    manifest = Manifest.read(manifest_path(artifact))
    assert manifest.precision == precision and manifest.extra["engine"]["built"] is False
    assert manifest.parity["passed"] and manifest.parity["runtime"].startswith("onnxruntime")


@pytest.mark.skipif(NO_ENGINE is None, reason="this machine can build engines")
def test_require_engine_fails_and_publishes_nothing(tmp_path):
    out = tmp_path / "out"
    done = run_cli("mobileone_s0", "--target", "tensorrt", "--input-size", "64", "--require-engine",
                   "--out", str(out), cwd=tmp_path)
    assert done.returncode != 0 and "--require-engine: no TensorRT engine can be built here" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists() or not list(out.iterdir()), list(out.iterdir())


def test_options_of_other_targets_are_refused(tmp_path):
    done = run_cli("mobileone_s0", "--target", "tensorrt", "--compute-units", "all", "--out", str(tmp_path),
                   cwd=tmp_path)
    assert done.returncode != 0 and "--target tensorrt does not take --compute-units (for coreml)" in done.stderr


class Overflowing(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 10)
        with torch.no_grad():
            self.conv1.weight.mul_(2e5)
            self.conv2.weight.mul_(1e-5)

    def forward(self, x):
        y = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(y.mean((2, 3)))


def test_fp16_onnx_keeps_overflowing_layers_fp32(tmp_path):
    model, x = Overflowing().eval(), torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    export_onnx(model, x, tmp_path / "f32.onnx")
    keep = {"conv1": True, "conv2": False}  # conv2 reads conv1's large output but writes small values
    converted, kept = convert_to_fp16(onnx.load(str(tmp_path / "f32.onnx")), keep_fp32=keep)
    onnx.save(converted, str(tmp_path / "f16.onnx"))
    types = {i.name: i.data_type for i in converted.graph.initializer}
    assert types["conv1.weight"] == types["conv2.weight"] == onnx.TensorProto.FLOAT
    assert types["head.weight"] == onnx.TensorProto.FLOAT16
    assert len(kept) == 3  # conv1, the ReLU reading its output, conv2
    with torch.no_grad():
        reference = model(x).numpy()
    assert compare_outputs(reference, OrtModel(tmp_path / "f16.onnx").run(x.numpy()), "fp16")


@pytest.mark.slow
@pytest.mark.skipif(NO_ENGINE is None, reason="this machine can build engines")
def test_default_command_at_224(tmp_path):
    """`deploykit export mobileone_s1 --target tensorrt` as written in the issue."""
    done = run_cli("mobileone_s1", "--target", "tensorrt", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    plan = check_plan(tmp_path / "mobileone_s1.trt", "fp16")
    assert plan["input"]["shape"] == [1, 3, 224, 224]
    print("\n" + done.stdout)


@pytest.mark.needs_gpu
@pytest.mark.skipif(NO_ENGINE is not None, reason=f"no TensorRT engine can be built here: {NO_ENGINE}")
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_engine_build_parity_and_latency(precision, tmp_path):
    outcome = export(ExportRequest(model="mobileone_s0", target="tensorrt", out_dir=tmp_path, input_size=64,
                                   options={"precision": precision, "require_engine": True}))
    assert outcome.build.parity.passed and outcome.build.details["engine"]["built"]
    assert (outcome.artifact / "model.engine").is_file() and (outcome.artifact / "timing.cache").is_file()
    assert outcome.build.details["engine"]["latency_ms"]["p50_ms"] > 0
    assert np.isfinite(outcome.build.parity.max_abs_err)


@pytest.mark.skipif(NO_ENGINE is None, reason="this machine can build engines; see the needs_gpu test")
def test_int8_writes_tensorrt_layout_qdq_and_plan(data_dir, tmp_path):
    """--precision int8: the calibrated QDQ ONNX in TensorRT's layout (symmetric s8, zero points 0), gated
    in ONNX Runtime on held-out images against the float model, and the plan; no engine here."""
    from onnx import numpy_helper

    done = run_cli("resnet20_cifar", "--target", "tensorrt", "--precision", "int8", "--calib",
                   str(data_dir / "cifar10" / "train"), "--calib-size", "96", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    artifact = tmp_path / "resnet20_cifar.int8.trt"
    plan = check_plan(artifact, "int8")
    assert sorted(p.name for p in artifact.iterdir()) == ["model.onnx", "plan.json"]
    model = onnx.load(str(artifact / plan["onnx"]))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    manifest = Manifest.read(manifest_path(artifact))
    record = manifest.extra["int8"]
    assert manifest.precision == "int8" and record["layout"]["name"] == "tensorrt"
    assert manifest.parity["passed"] and record["chosen"]["loss_points"] <= 1.0
    assert record["speed"] == {"measured": False, "reason": record["speed"]["reason"]}
    assert "where its engine is built" in record["speed"]["reason"]
    assert "--stronglyTyped" in done.stdout


@pytest.mark.skipif(NO_ENGINE is None, reason="this machine can build engines")
def test_int8_without_calibration_images_is_refused(tmp_path):
    done = run_cli("resnet20_cifar", "--target", "tensorrt", "--precision", "int8", "--out", str(tmp_path / "o"),
                   cwd=tmp_path)
    assert done.returncode == 2 and "TensorRT int8 needs calibration images" in done.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
