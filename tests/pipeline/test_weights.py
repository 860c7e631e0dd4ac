"""One weights mechanism for export and eval: released weights, old checkpoints, deploy-form checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from deploykit import zoo
from deploykit.core.errors import DeployKitError
from deploykit.core.fsutil import sha256_file
from deploykit.core.manifest import Manifest, manifest_path
from deploykit.passes import reparameterize
from deploykit.pipeline.evaluate import load_zoo_model
from deploykit.pipeline.export import ExportRequest, build_float_model, export
from tests.conftest import randomize_bn

RESNET56 = "weights/cifar10_resnet/resnet56-4bfd9763.th"


def test_cli_exports_resnet56_with_the_released_checkpoint(data_dir, tmp_path):
    """The .th predates torch 0.4.1 (no BN counters): it used to fail with 17 missing keys."""
    weights = data_dir / RESNET56
    env = {k: v for k, v in os.environ.items() if k != "DEPLOYKIT_DEBUG"}
    command = [sys.executable, "-m", "deploykit", "export", "resnet56_cifar", "--weights", str(weights),
               "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    manifest = json.loads(manifest_path(tmp_path / "resnet56_cifar.onnx").read_text())
    assert manifest["weights_sha256"] == sha256_file(weights) == manifest["parent"]["weights_sha256"]
    assert manifest["parent"]["kind"] == "torch-training-form" and manifest["parity"]["passed"]
    assert "resnet56-4bfd9763.th" in done.stdout


def test_export_and_eval_default_to_the_same_released_weights(data_dir):
    exported = build_float_model(ExportRequest(model="resnet20_cifar"))
    evaluated, source, warnings = load_zoo_model("resnet20_cifar", None)
    assert exported.path == zoo.get("resnet20_cifar").default_weights()
    assert source == "the zoo's default weights"
    assert exported.sha256 == sha256_file(exported.path) and not warnings
    theirs = evaluated.state_dict()
    assert all(torch.equal(value, theirs[key]) for key, value in exported.model.state_dict().items())


@pytest.mark.parametrize("request_, expected", [
    (ExportRequest(model="resnet20_cifar", random_init=True), "random-init"),
    (ExportRequest(model="resnet20_cifar", num_classes=100), "random-init"),  # no released head fits
    (ExportRequest(model="mobilenet_v1_025"), "random-init"),  # the zoo has no weights for it
])
def test_random_init_when_asked_or_nothing_fits(request_, expected):
    assert build_float_model(request_).sha256 == expected


def test_random_init_and_weights_exclude_each_other(tmp_path):
    with pytest.raises(DeployKitError, match="--weights and --random-init exclude each other"):
        build_float_model(ExportRequest(model="resnet20_cifar", weights=tmp_path / "w.pth", random_init=True))


def test_missing_released_weights_say_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPLOYKIT_DATA", str(tmp_path))
    with pytest.raises(DeployKitError, match="released weights of resnet20_cifar are not at") as info:
        build_float_model(ExportRequest(model="resnet20_cifar"))
    assert "--random-init" in str(info.value)


def test_missing_bn_counters_are_filled_for_any_model(tmp_path):
    model = randomize_bn(zoo.create("mobilenet_v1_025", num_classes=10))
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    fresh = zoo.create("mobilenet_v1_025", num_classes=10)
    loaded = zoo.load_weights("mobilenet_v1_025", fresh, tmp_path / "old.pth")
    counters = [v for k, v in loaded.model.state_dict().items() if k.endswith("num_batches_tracked")]
    assert counters and all(int(c) == 0 for c in counters)


def test_deploy_form_checkpoint_exports_as_loaded(tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(zoo.create("mobileone_s0", num_classes=10), seed=1, input_shape=(64, 3, 64, 64))
    weights = tmp_path / "s0_fused.safetensors"
    save_file({k: v.contiguous() for k, v in reparameterize(model).state_dict().items()}, str(weights))
    outcome = export(ExportRequest(model="mobileone_s0", weights=weights, out_dir=tmp_path / "out",
                                   input_size=64, num_classes=10))
    manifest = Manifest.read(manifest_path(outcome.artifact))
    assert manifest.parent["kind"] == "torch-deploy-form" and manifest.weights_sha256 == sha256_file(weights)
    assert manifest.parent["weights_layout"] == "apple/ml-mobileone (our names)"
    assert outcome.build.parity.passed
    assert outcome.build.details["op_counts"].get("BatchNormalization", 0) == 0
