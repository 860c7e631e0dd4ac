"""Bad input ends in one clear message and a non-zero exit: no traceback, nothing at the output path."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deploykit import zoo


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DEPLOYKIT_DEBUG"}
    return subprocess.run([sys.executable, "-m", "deploykit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


class _Exploit:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_exploit(path: Path, marker: Path) -> Path:
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Exploit(marker)}, f)
    return path


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    corrupt = tmp / "corrupt.pth"
    corrupt.write_bytes(random.Random(1).randbytes(2048))  # seeded: the unpickler's error depends on the bytes
    bad_st = tmp / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    wrong = tmp / "wrong.pth"
    torch.save(zoo.create("mobileone_s0", num_classes=7).state_dict(), wrong)
    exploit = _write_exploit(tmp / "exploit.pth", tmp / "PWNED")
    return {
        "unknown model": (["mobileone_s9"], "unknown model 'mobileone_s9'; did you mean"),
        "missing weights": (["mobileone_s0", "--weights", str(tmp / "nope.pth")], "weights file not found"),
        "corrupt pth": (["mobileone_s0", "--weights", str(corrupt)], "not a readable PyTorch checkpoint"),
        "corrupt safetensors": (["mobileone_s0", "--weights", str(bad_st)], "not a valid safetensors file"),
        "code-executing pickle": (["mobileone_s0", "--weights", str(exploit)], "would run code on load"),
        "wrong shapes": (["mobileone_s0", "--weights", str(wrong)], "shape mismatches: linear.bias (7,) vs model (1000,)"),
        "unknown target": (["mobileone_s0", "--target", "tflite"], "unknown target 'tflite'"),
    }


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    return tmp_path_factory.mktemp("bad")


@pytest.mark.parametrize("case", ["unknown model", "missing weights", "corrupt pth", "corrupt safetensors",
                                  "code-executing pickle", "wrong shapes", "unknown target"])
def test_bad_input_fails_cleanly(case, bad_inputs, tmp_path):
    args, expected = _bad_inputs(bad_inputs)[case]
    out = tmp_path / "out"
    proc = run_cli("export", *args, "--input-size", "64", "--out", str(out), cwd=tmp_path)
    assert proc.returncode != 0
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    assert not (bad_inputs / "PWNED").exists(), "pickled code was executed"


def test_every_command_has_help(tmp_path):
    for args in (["--help"], ["export", "--help"], ["models", "--help"]):
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 0 and "Usage" in proc.stdout, (args, proc.stderr)


def test_export_end_to_end(tmp_path):
    proc = run_cli("export", "repvgg_a0", "--input-size", "64", "--out", "arts", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "PASS (fp32)" in proc.stdout and (tmp_path / "arts" / "repvgg_a0.onnx").is_file()
    assert (tmp_path / "arts" / "repvgg_a0.onnx.manifest.json").is_file()
