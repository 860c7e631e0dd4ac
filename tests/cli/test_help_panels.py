"""`--help` of the long commands: options in panels, short enough to read (two 50-line screens at 80 columns),
and the command line gathered into the request dataclasses the pipeline takes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploykit.cli.export_cmd import OPTIONS as EXPORT_OPTIONS
from deploykit.cli.export_cmd import export_request
from deploykit.cli.finetune_cmd import OPTIONS as FINETUNE_OPTIONS
from deploykit.cli.finetune_cmd import finetune_request


def _help(command: str) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "deploykit", command, "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "80"}, check=True)
    return done.stdout.splitlines()


@pytest.mark.parametrize(("command", "panels"), [
    ("export", ["Model and weights", "Target", "Output", "int8", "Core ML", "TensorRT", "Pruning"]),
    ("finetune", ["Data and output", "Starting point", "Training", "Distillation", "Run"]),
    ("profile", ["Devices and timing", "Accuracy and agreement", "Report"]),
])
def test_long_commands_group_their_options_in_panels_that_fit_two_screens(command, panels):
    lines = _help(command)
    titles = [line for line in lines if line.startswith("╭─ ")]
    assert all(any(f"╭─ {panel}" in title for title in titles) for panel in panels), titles
    assert len(lines) <= 100


def _defaults(options) -> dict:
    return {o.name: o.info.default for o in options}


def test_export_options_fill_the_request_and_only_the_given_target_options():
    values = {**_defaults(EXPORT_OPTIONS), "model": "resnet20_cifar", "int8": True, "calib": Path("c"),
              "out_dir": Path("o")}
    request = export_request(values)
    assert (request.model, request.out_dir, request.target, request.prune) == ("resnet20_cifar", Path("o"), "onnx", None)
    assert request.options == {"opset": 17, "threads": 2, "int8": True, "calib": Path("c")}


def test_finetune_options_fill_the_request_and_its_train_config():
    values = {**_defaults(FINETUNE_OPTIONS), "model": "resnet20_cifar", "data": Path("d"), "out": Path("w.st"),
              "warmup_fraction": 0.2, "augment": False}
    request = finetune_request(values)
    assert (request.model, request.data, request.threads) == ("resnet20_cifar", Path("d"), 2)
    assert request.config.warmup_fraction == 0.2 and request.config.lr == 0.2  # from scratch: the scratch lr
    assert not request.config.augment.hflip
