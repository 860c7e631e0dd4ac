"""The target registry: every target has tests, and options meant for another target are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploykit.core.errors import DeployKitError
from deploykit.pipeline.targets import TARGETS, check_options, get_target


def test_every_registered_target_has_a_test_module():
    get_target("onnx")  # importing the registry's modules registers every target
    modules = [p.stem for p in Path(__file__).parent.glob("test_*.py")]
    missing = [name for name in TARGETS.names() if not any(name in m for m in modules)]
    assert not missing, f"targets without tests: {missing}"


def test_an_option_of_another_target_is_refused_naming_its_owner():
    with pytest.raises(DeployKitError, match=r"--target onnx does not take --compute-units \(for coreml\)"):
        check_options(get_target("onnx"), {"opset": 17, "compute_units": "all"})
    with pytest.raises(DeployKitError, match=r"--workspace \(for tensorrt\)"):
        check_options(get_target("coreml"), {"workspace": 512})


def test_shared_and_unclaimed_options_pass():
    check_options(get_target("coreml"), {"opset": 17, "threads": 2, "precision": "fp32", "calib": "d"})
    check_options(get_target("tensorrt"), {"precision": "fp16", "calib": "d", "not_a_target_option": 1})
