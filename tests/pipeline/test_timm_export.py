"""`deploykit export timm/NAME` and timm models through `--model-from`: what the issue measured (65 Conv and
34 BatchNormalization left in timm's MobileOne-S1, silently) now gives 43 Conv, 0 BatchNormalization and
says so; unfolded blocks are reported, `--require-folded` refuses them; names and installs fail clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from deploykit.core.errors import DeployKitError
from deploykit.core.fsutil import sha256_file
from deploykit.core.manifest import Manifest, manifest_path
from deploykit.pipeline.export import ExportRequest, export, probe_batch
from deploykit.runtimes.onnxruntime import OrtModel
from tests.conftest import randomize_bn

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DEPLOYKIT_DEBUG"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "deploykit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_timm_mobileone_s1_exports_43_conv_and_no_batchnorm(tmp_path):
    outcome = export(ExportRequest(model="timm/mobileone_s1", random_init=True, input_size=64, out_dir=tmp_path))
    ops = outcome.build.details["op_counts"]
    assert (ops["Conv"], ops.get("BatchNormalization", 0)) == (43, 0) and outcome.build.parity.passed
    assert outcome.artifact.name == "timm-mobileone_s1.onnx"
    manifest = Manifest.read(manifest_path(outcome.artifact))
    report = manifest.passes[0].report
    assert manifest.model == "timm/mobileone_s1" and report["unfolded"] == {"sums": 0, "norms": 0, "first": []}
    assert {b["via"] for b in report["blocks"]} == {"graph"}  # timm's own reparameterize() was not needed
    assert manifest.preprocess["resize"] == 71  # timm's crop_pct 0.9 at 64 px: floor(64 / 0.9)


def test_a_local_timm_checkpoint_is_what_gets_exported(tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(timm.create_model("mobileone_s0", pretrained=False).eval(), seed=7)
    weights = tmp_path / "mobileone_s0.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    outcome = export(ExportRequest(model="timm/mobileone_s0", weights=weights, input_size=64, out_dir=tmp_path))
    assert outcome.build.parity.passed and outcome.manifest.weights_sha256 == sha256_file(weights)
    probe = probe_batch(1, 3, 64)
    with torch.no_grad():
        expected = model(probe).numpy()
    actual = OrtModel(outcome.artifact, threads=1).run(probe.numpy())
    assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()


def test_timm_without_weights_or_random_init_is_refused(tmp_path):
    with pytest.raises(DeployKitError, match="never downloads") as error:
        export(ExportRequest(model="timm/mobileone_s0", out_dir=tmp_path))
    assert "--random-init" in error.value.fix and not list(tmp_path.iterdir())


def test_unknown_timm_name_lists_close_matches(tmp_path):
    with pytest.raises(DeployKitError, match="did you mean timm/mobileone_s1"):
        export(ExportRequest(model="timm/mobilone_s1", random_init=True, out_dir=tmp_path))
    assert not list(tmp_path.iterdir())


def test_missing_timm_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now fails as if it were not installed
    with pytest.raises(DeployKitError, match="timm is not installed") as error:
        export(ExportRequest(model="timm/mobileone_s1", random_init=True, out_dir=tmp_path))
    assert error.value.fix == 'pip install "deploykit[timm]"'


def test_cli_model_from_a_timm_factory(tmp_path):
    result = run_cli("export", "--model-from", "tests.passes.graph_models:timm_mobileone_s1", "--input-size", "64",
                     "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())  # rich wraps long lines
    assert "43 Conv, 0 BatchNormalization" in out and "PASS" in out and "nothing left unfolded" in out


def test_unfolded_blocks_are_reported_and_require_folded_refuses_them(tmp_path):
    spec = "tests.passes.graph_models:pool_net"
    refused = run_cli("export", "--model-from", spec, "--input-size", "32", "--out", str(tmp_path / "ci"),
                      "--require-folded")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "--require-folded" in refused.stderr and "AvgPool2d inside a branch" in refused.stderr
    assert not (tmp_path / "ci").exists() or not list((tmp_path / "ci").iterdir())
    allowed = run_cli("export", "--model-from", spec, "--input-size", "32", "--out", str(tmp_path))
    assert allowed.returncode == 0, allowed.stderr
    out = " ".join(allowed.stdout.split())
    assert "warning: 1 multi-branch sums and 0 BatchNorms left unfolded" in out and "block (AvgPool2d" in out
    unfolded = Manifest.read(manifest_path(tmp_path / "pool_net.onnx")).passes[0].report["unfolded"]
    assert unfolded["sums"] == 1 and unfolded["first"][0]["where"] == "block"


def test_models_source_timm_lists_the_measured_coverage():
    result = run_cli("models", "--source", "timm")
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "timm/mobileone_s1" in out and "timm/resnet18" in out and "Measured with timm" in out


@pytest.mark.slow
def test_timm_mobileone_s1_to_coreml_has_43_conv_ops(tmp_path):
    pytest.importorskip("coremltools")
    outcome = export(ExportRequest(model="timm/mobileone_s1", target="coreml", random_init=True, out_dir=tmp_path))
    ops = outcome.build.details["op_histogram"]
    assert ops["conv"] == 43 and ops.get("batch_norm", 0) == 0 and outcome.artifact.suffix == ".mlpackage"
