"""`deploykit finetune` (and `deploykit prune` before it) as a user runs them, in subprocesses: interrupted
runs resume from the last checkpoint and end with the same weights as an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from deploykit.pipeline.finetune import TRAINING_KEY, resume_path
from deploykit.training.state import STATE_KEY
from deploykit.zoo.structure import STRUCTURE_KEY

PER_CLASS = 4  # 40 images, batch 8: five steps an epoch
RUN = ["resnet20_cifar", "--batch-size", "8", "--threads", "1"]


def _cifar_subset(tmp_path_factory, per_class: int) -> Path:
    source = Path(os.environ.get("DEPLOYKIT_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
    source = source / "cifar10" / "train"
    if not source.is_dir():
        pytest.skip(f"real data not found at {source}")
    root = tmp_path_factory.mktemp(f"cifar_{per_class}")
    for class_dir in sorted(source.iterdir()):
        (root / class_dir.name).mkdir()
        for image in sorted(class_dir.iterdir())[:per_class]:
            shutil.copy(image, root / class_dir.name / image.name)
    return root


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory) -> Path:
    return _cifar_subset(tmp_path_factory, PER_CLASS)


@pytest.fixture(scope="module")
def one_batch_cifar(tmp_path_factory) -> Path:
    """130 images: one full batch of the export chain's fixed fine-tune batch size (128)."""
    return _cifar_subset(tmp_path_factory, 13)


def _env(tmp_path: Path) -> dict:  # wide: paths and figures stay on one line
    return {**os.environ, "DEPLOYKIT_CACHE": str(tmp_path / "cache"), "DEPLOYKIT_DEBUG": "1", "COLUMNS": "250"}


def _deploykit(*args, tmp_path: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "deploykit", *map(str, args)], capture_output=True, text=True,
                            env=_env(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def _state(checkpoint: Path) -> dict:
    with safe_open(str(checkpoint), framework="pt") as f:
        return json.loads(f.metadata()[STATE_KEY])


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def uninterrupted(tiny_cifar, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("full")
    _deploykit("finetune", *RUN, "--data", tiny_cifar, "--epochs", "2", "--out", tmp / "full.safetensors", tmp_path=tmp)
    return tmp / "full.safetensors"


def test_stopped_after_an_epoch_then_rerun_resumes_to_the_same_weights(tiny_cifar, uninterrupted, tmp_path):
    out = tmp_path / "w.safetensors"
    command = ["finetune", *RUN, "--data", tiny_cifar, "--epochs", "2", "--out", out]
    first = _deploykit(*command, "--stop-after-epochs", "1", tmp_path=tmp_path)
    assert "stopped after 1 epoch" in first.stdout and not out.exists()
    assert (_state(resume_path(out))["epoch"], _state(resume_path(out))["step"]) == (1, 0)
    second = _deploykit(*command, tmp_path=tmp_path)
    assert "resumed from epoch 2, step 0" in second.stdout
    assert _same_weights(out, uninterrupted)
    with safe_open(str(out), framework="pt") as f:
        record = json.loads(f.metadata()[TRAINING_KEY])
    assert [e["epoch"] for e in record["history"]] == [1, 2] and record["config"]["seed"] == 0
    assert not resume_path(out).exists()  # finished: no resume state left behind (issue 16)
    again = _deploykit(*command, tmp_path=tmp_path)  # the same command once more: nothing to train
    assert "epoch 1/2" not in again.stderr and _same_weights(out, uninterrupted)


# slow: the resume logic is covered by the stop-after-an-epoch test; this adds the SIGKILL case
@pytest.mark.slow
def test_killed_mid_epoch_resumes_from_the_last_step_checkpoint(tiny_cifar, uninterrupted, tmp_path):
    out = tmp_path / "k.safetensors"
    command = ["finetune", *RUN, "--data", tiny_cifar, "--epochs", "2", "--out", out, "--save-every", "1"]
    process = subprocess.Popen([sys.executable, "-m", "deploykit", *map(str, command)], env=_env(tmp_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if resume_path(out).exists():
            state = _state(resume_path(out))
            if state["epoch"] == 0 and state["step"] >= 2:
                process.send_signal(signal.SIGKILL)
                killed_at = (state["epoch"], state["step"])
                break
        time.sleep(0.02)
    process.wait()
    if killed_at is None:
        pytest.skip("the run finished before it could be killed mid-epoch")
    assert not out.exists()
    resumed = _deploykit(*command, tmp_path=tmp_path)
    assert "resumed from epoch 1, step" in resumed.stdout
    assert _same_weights(out, uninterrupted)


# slow: pruning (tests/passes) and distillation (tests/training) are covered apart; this joins them
@pytest.mark.slow
def test_prune_then_distil_from_the_float_model(tiny_cifar, data_dir, tmp_path):
    from deploykit.pipeline.weights import build_model

    pruned = tmp_path / "pruned.safetensors"
    report = _deploykit("prune", "resnet20_cifar", "--ratio", "0.5", "--out", pruned, tmp_path=tmp_path)
    assert "MACs 40.6 M ->" in report.stdout
    out = tmp_path / "ft.safetensors"
    _deploykit("finetune", *RUN, "--data", tiny_cifar, "--epochs", "1", "--weights", pruned, "--teacher", "float",
               "--out", out, tmp_path=tmp_path)
    with safe_open(str(out), framework="pt") as f:
        metadata = f.metadata()
    record = json.loads(metadata[TRAINING_KEY])
    assert record["teacher"]["weights"].endswith("resnet20-12fca82f.th") and STRUCTURE_KEY in metadata
    model = build_model("resnet20_cifar", out)
    assert model.layer1[0].conv1.out_channels == 8 and model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    evaluated = _deploykit("eval", "resnet20_cifar", "--weights", out, "--data", tiny_cifar, "--json", tmp_path=tmp_path)
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["n"] == 10 * PER_CLASS


def test_help_lists_the_resume_options(tmp_path):
    result = subprocess.run([sys.executable, "-m", "deploykit", "finetune", "--help"], capture_output=True, text=True,
                            env={**_env(tmp_path), "COLUMNS": "200"})
    assert result.returncode == 0 and "--teacher" in result.stdout and "--stop-after-epochs" in result.stdout


def test_export_prune_finetune_chain_records_it_in_the_manifest(one_batch_cifar, data_dir, tmp_path):
    out = tmp_path / "art"
    result = _deploykit("export", "resnet20_cifar", "--prune", "0.3", "--finetune-data", one_batch_cifar,
                        "--finetune-epochs", "1", "--out", out, "--threads", "1", tmp_path=tmp_path)
    assert "pruned: MACs 40.6 M -> 27.0 M" in result.stdout and "PASS (fp32)" in result.stdout
    assert "fine-tuned 1 epoch (" in result.stdout  # not "1 epochs"
    assert "weights: resnet20_cifar.pruned30-ft.safetensors (pruned from resnet20-" in result.stdout
    for stage in ("prune 0.3", "fine-tune", "epoch 1/1: 1/1 batches", "torch -> ONNX", "simplify", "publish"):
        assert stage in result.stderr, f"no progress line for {stage!r} in a log (not a terminal)"
    assert sorted(p.name for p in out.iterdir()) == [  # the artifact's own name; no resume state left
        "resnet20_cifar.pruned30-ft.safetensors", "resnet20_cifar.pruned30.onnx",
        "resnet20_cifar.pruned30.onnx.manifest.json", "resnet20_cifar.pruned30.safetensors"]
    manifest = json.loads((out / "resnet20_cifar.pruned30.onnx.manifest.json").read_text())
    pruning = manifest["extra"]["pruning"]
    assert pruning["config"]["ratio"] == 0.3 and pruning["channels"]["layer1.0.conv1"] == 8
    assert pruning["channels"]["layer1.0.conv2"] == 16  # residual streams keep their widths
    assert pruning["finetune"]["config"]["epochs"] == 1 and pruning["finetune"]["teacher"]["weights"].endswith(".th")
    assert manifest["parity"]["passed"]
