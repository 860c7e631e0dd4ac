"""`deploykit eval` end to end in a subprocess: real accuracy figures and clean failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

MNIST_OPTIONS = ("--scale", "1", "--size", "28", "--grayscale")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DEPLOYKIT_DEBUG"}
    return subprocess.run([sys.executable, "-m", "deploykit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def eval_json(*args: str, cwd: Path) -> dict:
    proc = run_cli("eval", *args, "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # stdout holds the JSON and nothing else


def test_help(tmp_path):
    proc = run_cli("eval", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "Usage" in proc.stdout and "fractions" in proc.stdout


def test_mnist8_on_500(data_dir, tmp_path):
    result = eval_json(str(data_dir / "mnist" / "mnist-8.onnx"), "--data", str(data_dir / "mnist"),
                       *MNIST_OPTIONS, "--limit", "500", cwd=tmp_path)
    assert set(result) == {"top1", "top5", "n"} and result["n"] == 500
    assert result["top1"] >= 0.97


def test_mnist8_on_all_10000_matches_the_published_figure(data_dir, tmp_path):
    """About 2 s: mnist-8 is tiny. The model zoo publishes 98.9 %."""
    result = eval_json(str(data_dir / "mnist" / "mnist-8.onnx"), "--data", str(data_dir / "mnist"),
                       *MNIST_OPTIONS, cwd=tmp_path)
    assert result["n"] == 10_000 and result["top1"] == pytest.approx(0.989, abs=0.001)


def test_human_output_is_in_percent(data_dir, tmp_path):
    proc = run_cli("eval", str(data_dir / "mnist" / "mnist-8.onnx"), "--data", str(data_dir / "mnist"),
                   *MNIST_OPTIONS, "--limit", "100", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "top-1" in proc.stdout and "%" in proc.stdout and "n 100" in proc.stdout


@pytest.mark.slow
def test_resnet56_cifar_on_the_jpeg_test_set(data_dir, tmp_path):
    """The README's measured figure: 83.20 % on cifar10/test (JPEG)."""
    result = eval_json("resnet56_cifar", "--data", str(data_dir / "cifar10" / "test"), cwd=tmp_path)
    assert result["n"] == 10_000 and result["top1"] == pytest.approx(0.832, abs=0.003)


def _corrupt_folder(tmp: Path) -> Path:
    folder = tmp / "digits" / "seven"
    folder.mkdir(parents=True)
    for i in range(20):
        Image.new("L", (28, 28), i).save(folder / f"{i:02d}.png")
    (folder / "13.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    return tmp / "digits"


@pytest.mark.parametrize("case, expected", [
    ("missing path", "dataset not found"),
    ("empty folder", "dataset folder is empty"),
    ("corrupt image", "cannot read image"),
    ("missing model", "artifact not found"),
    ("unknown zoo model", "unknown model 'resnet57_cifar'"),
])
def test_bad_input_fails_cleanly(case, expected, data_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    model = str(data_dir / "mnist" / "mnist-8.onnx")
    args = {
        "missing path": [model, "--data", str(tmp_path / "nowhere")],
        "empty folder": [model, "--data", str(tmp_path / "empty")],
        "corrupt image": [model, "--data", str(_corrupt_folder(tmp_path)), *MNIST_OPTIONS],
        "missing model": [str(tmp_path / "nope.onnx"), "--data", str(data_dir / "mnist")],
        "unknown zoo model": ["resnet57_cifar", "--data", str(data_dir / "mnist")],
    }[case]
    proc = run_cli("eval", *args, cwd=tmp_path)
    stderr = proc.stderr.replace("\n", "")  # rich wraps long paths at the console width
    assert proc.returncode != 0
    assert expected in stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    if case == "corrupt image":
        assert "seven/13.png" in stderr
