"""`deploykit export --int8` through the CLI: bad calibration folders end in one clear message, a non-zero
exit and nothing at --out; the int8 options reach the manifest; eval can leave the calibration images out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

MODEL = "resnet20_cifar"  # small, 32x32, released weights in the shared data folder


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DEPLOYKIT_DEBUG"}
    return subprocess.run([sys.executable, "-m", "deploykit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _folder(tmp: Path, case: str) -> Path:
    folder = tmp / case.replace(" ", "_")
    folder.mkdir()
    if case == "unreadable images":
        for i in range(40):
            (folder / f"{i:03d}.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated, not a JPEG")
    elif case == "too few images":
        for i in range(5):
            Image.new("RGB", (32, 32), (i, i, i)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("case, extra, message", [
    ("empty folder", [], "dataset folder is empty"),
    ("unreadable images", ["--calib-size", "40"], "cannot read image"),
    ("too few images", [], "calibration needs 512 images but"),
])
def test_bad_calibration_folder_is_one_error_and_nothing_written(data_dir, tmp_path, case, extra, message):
    out = tmp_path / "out"
    done = run_cli("export", MODEL, "--int8", "--calib", str(_folder(tmp_path, case)), *extra, "--out", str(out),
                   cwd=tmp_path)
    assert done.returncode != 0
    assert message in done.stderr and "error:" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))


def test_int8_options_reach_the_manifest_and_eval_excludes_calibration(data_dir, tmp_path):
    out = tmp_path / "out"
    done = run_cli("export", MODEL, "--int8", "--calib", "cifar10/train", "--calib-size", "48", "--calib-split",
                   "200", "--calib-method", "minmax", "--per-channel", "on", "--accuracy-budget", "0.5",
                   "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    artifact = out / f"{MODEL}.int8.onnx"
    assert "int8: minmax calibration, per-channel weights" in " ".join(done.stdout.split())
    manifest = json.loads((out / f"{MODEL}.int8.onnx.manifest.json").read_text())
    record = manifest["extra"]["int8"]
    assert manifest["precision"] == "int8" and record["requested"] == {"calib_method": "minmax", "per_channel": "on"}
    assert record["budget_points"] == 0.5 and record["calibration"]["split"] == 200
    assert sorted((c["method"], c["per_channel"], str(c["bias_correction"])) for c in record["candidates"]) == [
        ("minmax", True, "False"), ("minmax", True, "None")]  # the one configuration, biases corrected or not
    train = str(data_dir / "cifar10" / "train")
    evaluated = run_cli("eval", str(artifact), "--data", train, "--exclude-calib", str(artifact), "--limit", "64",
                        cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "200 calibration images excluded, 49800 evaluated" in " ".join(evaluated.stdout.split())


def test_calib_without_int8_for_onnx_is_refused(data_dir, tmp_path):
    done = run_cli("export", MODEL, "--calib", "cifar10/train", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode != 0 and "--calib only apply to int8" in done.stderr and "Traceback" not in done.stderr


# the default layout end to end is tests/export/test_quantize.py::test_resnet20_cifar_int8_end_to_end
@pytest.mark.parametrize("device, layout", [("host-cpu-openvino", "openvino"),
                                            pytest.param(None, "onnxruntime", marks=pytest.mark.slow)])
def test_device_picks_the_layout_and_int8_is_timed_there(data_dir, tmp_path, device, layout):
    pytest.importorskip("openvino")
    extra = ["--device", device] if device else []
    done = run_cli("export", MODEL, "--int8", "--calib", str(data_dir / "cifar10" / "train"), "--calib-size", "96",
                   *extra, "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    from deploykit.core.manifest import Manifest, manifest_path

    record = Manifest.read(manifest_path(tmp_path / f"{MODEL}.int8.onnx")).extra["int8"]
    assert record["layout"]["name"] == layout
    assert record["made_for"]["device"] == (device or "host-cpu-ort")
    speed = record["speed"]
    assert speed["measured"] and speed["float_ms"] > 0 and speed["int8_ms"] > 0
    assert f"int8 laid out for {record['made_for']['runtime']}" in done.stdout
    assert "int8 speed on" in done.stdout + done.stderr or "NOT faster" in done.stdout + done.stderr


def test_require_faster_refuses_what_was_not_measured_faster():
    """A measured int8 that is not faster than float (or unstable, or unmeasured) fails --require-faster."""
    from deploykit.core.errors import DeployKitError
    from deploykit.pipeline.targets.speed import SpeedCheck, require_faster

    slower = SpeedCheck("host-cpu-ort", "onnxruntime", float_ms=1.0, int8_ms=1.5, runs=20, unstable=False,
                        precision_used="int8 (QDQ); ORT ran mixed")
    with pytest.raises(DeployKitError, match="int8 is NOT faster on host-cpu-ort.*ratio 1.50"):
        require_faster(slower)
    unstable = SpeedCheck("host-cpu-ort", "onnxruntime", 1.0, 0.5, 20, True, "int8")
    with pytest.raises(DeployKitError, match="unstable"):
        require_faster(unstable)
    require_faster(SpeedCheck("host-cpu-ort", "onnxruntime", 1.0, 0.5, 20, False, "int8"))  # faster: passes
    with pytest.raises(DeployKitError, match="could not be timed"):
        require_faster(None, "no runtime")


def test_device_without_qdq_runtime_is_refused(data_dir, tmp_path):
    done = run_cli("export", MODEL, "--int8", "--calib", str(data_dir / "cifar10" / "train"), "--device",
                   "mac-m1-coreml", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert done.returncode == 2 and "takes no int8 QDQ ONNX" in done.stderr and "--target coreml" in done.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*"))


def test_profile_warns_when_int8_runs_on_a_runtime_it_was_not_laid_out_for():
    from deploykit.core.devices import load_device
    from deploykit.core.manifest import Manifest
    from deploykit.pipeline.profile import layout_mismatch

    manifest = Manifest(model="m", target="onnx", artifact="m.int8.onnx", weights_sha256="x", preprocess={},
                        input_shape=[1, 3, 32, 32], passes=[], parent={}, precision="int8",
                        extra={"int8": {"layout": {"name": "tensorrt", "runtimes": ["tensorrt"]}}})
    notes = layout_mismatch(manifest, load_device("host-cpu-ort"))
    assert notes and "laid out for tensorrt, run on onnxruntime" in notes[0] and "--device host-cpu-ort" in notes[0]
    manifest.extra["int8"]["layout"]["runtimes"] = ["onnxruntime"]
    assert layout_mismatch(manifest, load_device("host-cpu-ort")) == []
