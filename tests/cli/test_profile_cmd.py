"""`deploykit profile` end to end in a subprocess: the report on stdout or in a file, and clean failures for
devices that cannot be reached or cannot run here. Structure only, never speed."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deploykit import zoo
from deploykit.pipeline.export import ExportRequest, export

MODEL = "resnet20_cifar"
FAST = ("--runs", "3", "--warmup", "1")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DEPLOYKIT_DEBUG"}
    return subprocess.run([sys.executable, "-m", "deploykit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-profile")
    torch.manual_seed(0)
    weights = root / "r20.pt"
    torch.save(zoo.create(MODEL).state_dict(), weights)
    return export(ExportRequest(model=MODEL, weights=weights, out_dir=root / "folded")).artifact


def test_help(tmp_path):
    proc = run_cli("profile", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "--device" in proc.stdout and "float original" in proc.stdout


def test_csv_on_stdout_and_html_and_json_files(artifact, tmp_path):
    proc = run_cli("profile", str(artifact), "--device", "host-cpu-ort", "--batch", "1,4", *FAST,
                   "--format", "csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))  # stdout holds the report and nothing else
    assert [(r["name"], r["batch"]) for r in rows] == [(f"{MODEL} (float)", "1"), (f"{MODEL} (float)", "4"),
                                                         (f"{MODEL}.onnx", "1"), (f"{MODEL}.onnx", "4")]
    assert rows[3]["note"] == "n/a (static batch 1)" and float(rows[2]["agreement"]) == 1.0
    assert float(rows[2]["p50_ms"]) > 0 and float(rows[2]["macs"]) > 0

    html = tmp_path / "report.html"
    proc = run_cli("profile", str(artifact), "--batch", "1", *FAST, "--out", str(html), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and html.read_text().count("<circle") == 2


@pytest.mark.slow  # by default the JSON render is checked in tests/profile/test_report.py, --out just above
def test_json_file(artifact, tmp_path):
    as_json = tmp_path / "report.json"
    proc = run_cli("profile", str(artifact), "--batch", "1", *FAST, "--format", "json", "--out", str(as_json),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(as_json.read_text())
    assert "omp_wait_policy" in report["environment"] and len(report["rows"]) == 2


@pytest.mark.parametrize("args, message", [
    (("--device", "host-cpu-onnx"), "unknown device 'host-cpu-onnx'"),
    (("--batch", "1,x"), "--batch '1,x' is not a comma-separated list"),
    (("--format", "pdf"), "unknown format 'pdf'"),
])
def test_bad_options_fail_in_one_line(artifact, tmp_path, args, message):
    proc = run_cli("profile", str(artifact), *args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML runs on macOS")
def test_a_device_that_cannot_run_here_names_itself_and_why(artifact, tmp_path):
    proc = run_cli("profile", str(artifact), "--device", "mac-m1-coreml", *FAST, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "device mac-m1-coreml cannot run here: Core ML's runtime exists only on Apple platforms" in proc.stderr


def test_a_remote_device_without_an_agent(artifact, tmp_path):
    device = tmp_path / "far-away.yaml"
    device.write_text("runtime: onnxruntime\nlocation: remote\n")
    proc = run_cli("profile", str(artifact), "--device", str(device), cwd=tmp_path)
    assert proc.returncode == 2 and "device far-away is remote and has no agent configured" in proc.stderr
