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
    assert [(c["method"], c["per_channel"]) for c in record["candidates"]] == [("minmax", True)]
    train = str(data_dir / "cifar10" / "train")
    evaluated = run_cli("eval", str(artifact), "--data", train, "--exclude-calib", str(artifact), "--limit", "64",
                        cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "200 calibration images excluded, 49800 evaluated" in " ".join(evaluated.stdout.split())


def test_calib_without_int8_for_onnx_is_refused(data_dir, tmp_path):
    done = run_cli("export", MODEL, "--calib", "cifar10/train", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode != 0 and "--calib only apply to int8" in done.stderr and "Traceback" not in done.stderr
