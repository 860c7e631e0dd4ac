"""No silent overwrite (issue 16, item 3): names carry precision and pruning; a different export at the same
name is refused unless --force; a failed export leaves nothing, not even the --out folder it created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deploykit.core.errors import DeployKitError
from deploykit.core.manifest import Manifest, manifest_path
from deploykit.passes.prune import PruneConfig
from deploykit.pipeline.export import ExportRequest, export
from deploykit.pipeline.overwrite import pruned_stem
from deploykit.pipeline.prune_chain import PruneRequest
from deploykit.pipeline.targets import get_target

MODEL = "resnet20_cifar"  # 32x32: an export takes about a second


def _export(out: Path, **kwargs):
    return export(ExportRequest(model=MODEL, out_dir=out, random_init=True, **kwargs))


def test_names_carry_precision_and_pruning():
    onnx, coreml, trt = get_target("onnx"), get_target("coreml"), get_target("tensorrt")
    assert [onnx.file_name("m", o) for o in ({}, {"precision": "fp16"}, {"int8": True})] == \
        ["m.onnx", "m.fp16.onnx", "m.int8.onnx"]
    assert [coreml.file_name("m", o) for o in ({}, {"precision": "fp32"}, {"weights_int8": True})] == \
        ["m.mlpackage", "m.fp32.mlpackage", "m.w8.mlpackage"]
    assert trt.file_name("m", {"precision": "fp32"}) == "m.fp32.trt"
    assert pruned_stem("m", PruneRequest(PruneConfig(ratio=0.3))) == "m.pruned30"
    assert pruned_stem("m", None) == "m"


def test_a_different_export_at_the_same_name_is_refused_unless_forced(tmp_path):
    first = _export(tmp_path)
    assert first.manifest.extra["request"]["input_size"] == 32
    _export(tmp_path)  # the same export again: replaced, as before
    with pytest.raises(DeployKitError, match=r"different export \(input_size: 32 -> 40\).*") as refused:
        _export(tmp_path, input_size=40)
    assert "--force" in refused.value.fix
    assert Manifest.read(manifest_path(first.artifact)).input_shape == [1, 3, 32, 32]  # untouched
    forced = _export(tmp_path, input_size=40, force=True)
    assert forced.artifact == first.artifact and forced.manifest.input_shape == [1, 3, 40, 40]


def test_a_pruned_export_gets_its_own_name(tmp_path):
    pruned = _export(tmp_path, prune=PruneRequest(PruneConfig(ratio=0.3)))
    assert pruned.artifact.name == f"{MODEL}.pruned30.onnx"
    assert (tmp_path / f"{MODEL}.pruned30.safetensors").is_file()


def test_a_failed_export_leaves_no_folder(tmp_path):
    empty = tmp_path / "no-images"
    empty.mkdir()
    out = tmp_path / "new" / "deeper"
    with pytest.raises(DeployKitError):
        _export(out, options={"int8": True, "calib": empty})
    assert not (tmp_path / "new").exists()


def test_the_cli_refusal_is_one_message_naming_force(tmp_path):
    _export(tmp_path)
    refused = subprocess.run([sys.executable, "-m", "deploykit", "export", MODEL, "--random-init", "--out",
                              str(tmp_path), "--input-size", "40"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "--force" in refused.stderr and "Traceback" not in refused.stderr
