"""The LiteRT (.tflite) and ExecuTorch (.pte) targets: fp32 with parity against the training form and the
structure counted in the written program, int8 by PT2E under the ONNX int8 rules, an unlowerable op named
with its layer (nothing written), the runtimes' threads and precision, eval on the artifacts.

Each test runs once per target whose extra is installed; the others skip naming the extra."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from deploykit.core.errors import DeployKitError
from deploykit.pipeline.export import ExportRequest, export
from tests.export.test_quantize import SIZE, Tiny, context_for, noise_images

EXTRAS = {"litert": "litert_torch", "executorch": "executorch"}
SUFFIX = {"litert": ".tflite", "executorch": ".pte"}


def _target(name: str):
    missing = importlib.util.find_spec(EXTRAS[name]) is None
    return pytest.param(name, marks=pytest.mark.skipif(
        missing, reason=f'{EXTRAS[name]} is optional: pip install "deploykit[{name}]"'))


TARGETS = [_target("litert"), _target("executorch")]


def _export(target: str, out, model_from: str = "tests.export.edge_models:conv_bn_net", **options):
    return export(ExportRequest(model_from=model_from, target=target, input_size=SIZE, out_dir=out,
                                options={"threads": 2, **options}))


@pytest.fixture(scope="module")
def fp32_exports(tmp_path_factory):
    """One fp32 export per target for the whole module (each takes seconds)."""
    cache = {}

    def get(target: str):
        if target not in cache:
            cache[target] = _export(target, tmp_path_factory.mktemp(target))
        return cache[target]
    return get


@pytest.mark.parametrize("target", TARGETS)
def test_fp32_passes_parity_with_batch_norm_folded_and_one_op_per_conv(target, fp32_exports):
    outcome = fp32_exports(target)
    manifest = json.loads(outcome.artifact.with_name(outcome.artifact.name + ".manifest.json").read_text())
    assert outcome.artifact.suffix == SUFFIX[target] and manifest["precision"] == "fp32"
    assert manifest["parity"]["passed"] is True and manifest["parity"]["runtime"].startswith(target)
    structure = manifest["extra"]["structure"]
    assert (structure["conv_count"], structure["batch_norm_count"], structure["deployed_conv_count"]) == (3, 0, 3)
    assert manifest["versions"].get({"litert": "litert-torch", "executorch": "executorch"}[target])


@pytest.mark.parametrize("target", TARGETS)
def test_fp16_passes_parity_with_the_fp16_tolerance_and_stores_half_weights(target, tmp_path):
    outcome = _export(target, tmp_path, precision="fp16")
    manifest = json.loads(outcome.artifact.with_name(outcome.artifact.name + ".manifest.json").read_text())
    assert outcome.artifact.name.endswith(f".fp16{SUFFIX[target]}") and manifest["precision"] == "fp16"
    assert manifest["parity"]["passed"] is True and manifest["parity"]["precision"] == "fp16"
    assert manifest["extra"]["structure"]["conv_count"] == 3 and manifest["extra"]["fp16"]
    runtime = manifest["extra"]["runtime"]
    if target == "litert":  # the three convs' weights stored fp16 behind DEQUANTIZE, computed in fp32 here
        assert runtime["fp16_weight_tensors"] >= 3 and runtime["summary"].endswith("fp16 weight tensors")
    else:  # every XNNPACK compute node runs fp16
        assert runtime["summary"].startswith("fp16 (XNNPACK, 1 partition")


@pytest.mark.parametrize("target", TARGETS)
def test_an_op_the_target_cannot_lower_is_named_with_its_layer_and_nothing_is_written(target, tmp_path):
    with pytest.raises(DeployKitError, match=r"aten\.i0.* in layer 'odd'") as err:
        _export(target, tmp_path, model_from="tests.export.edge_models:odd_net")
    assert "nothing was written" in err.value.fix
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("options, message", [
    ({"precision": "bf16"}, "invalid --precision bf16"),
    ({"precision": "fp16", "calib": "somewhere"}, "--calib only apply to int8"),
    ({"calib": "somewhere"}, "--calib only apply to int8"),
    ({"int8": True, "precision": "fp32"}, "contradict"),
    ({"int8": True, "calib": "x", "calib_method": "entropy"}, "histogram observer"),
    ({"int8": True, "calib": "x", "device": "host-cpu-ort"}, "runs onnxruntime, not"),
])
def test_bad_options_are_one_message_before_any_work(target, tmp_path, options, message):
    with pytest.raises(DeployKitError, match=message):
        _export(target, tmp_path, **options)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("target", TARGETS)
def test_int8_is_calibrated_scored_on_held_out_images_and_runs_int8(target, tmp_path):
    from deploykit.pipeline.targets import get_target

    calib = noise_images(tmp_path / "calib", 48)
    ctx = context_for(Tiny(), calib=calib, calib_size=48, per_channel="on", time_on_device=False)
    build = get_target(target).build(ctx, tmp_path / f"tiny.int8{SUFFIX[target]}")
    record = build.details["int8"]
    assert build.precision == "int8" and build.parity and record["calibration"]["holdout"] == 16
    assert record["chosen"]["method"] == "histogram" and record["chosen"]["per_channel"] is True
    assert build.details["structure"]["conv_count"] == 3
    assert record["runtimes"][target]["summary"].startswith("int8")
    if target == "litert":  # the file's convs take int8 inputs
        assert record["runtimes"][target]["compute_ops"]["CONV_2D"] == {"INT8": 3}
    else:  # the lowered program's XNNPACK partitions hold the quantize ops with the convs
        assert build.details["structure"]["ops"].get("quantized_decomposed.quantize_per_tensor", 0) > 0


def test_a_missing_extra_names_it(monkeypatch):
    from deploykit.export.executorch import import_executorch_export
    from deploykit.export.litert import import_litert_torch

    monkeypatch.setitem(sys.modules, "litert_torch", None)
    monkeypatch.setitem(sys.modules, "executorch.exir", None)
    with pytest.raises(DeployKitError) as litert:
        import_litert_torch()
    with pytest.raises(DeployKitError) as executorch:
        import_executorch_export()
    assert 'deploykit[litert]' in litert.value.fix and 'deploykit[executorch]' in executorch.value.fix


@pytest.mark.parametrize("target", TARGETS)
def test_eval_runs_the_artifact_with_the_manifest_preprocessing(target, fp32_exports, tmp_path):
    from deploykit.pipeline.evaluate import EvalRequest, resolve_model

    artifact = fp32_exports(target).artifact
    model = resolve_model(EvalRequest(target=str(artifact), data=tmp_path, threads=2))
    assert model.preprocess.input_size == SIZE and "XNNPACK" in model.description
    x = np.random.default_rng(0).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    assert model.predict(x).shape == (3, 10)  # a batch of 3 through the static batch of 1
    with pytest.raises(DeployKitError, match="does not run"):
        resolve_model(EvalRequest(target=str(artifact), data=tmp_path, runtime="openvino"))


@pytest.mark.parametrize("target", TARGETS)
def test_profile_loads_the_artifact_on_the_host_device_with_its_threads(target, fp32_exports):
    from deploykit import runtimes
    from deploykit.core.devices import load_device

    device = load_device(f"host-cpu-{target}")
    runnable = runtimes.load(fp32_exports(target).artifact, device)
    assert runnable.static_batch == 1 and runnable.model.threads == device.threads == 2
    assert runnable.precision_used.startswith("fp32") and "XNNPACK, 1 partition" in runnable.precision_used


@pytest.mark.parametrize("target", [t for t in TARGETS if t.values[0] == "executorch"])
def test_executorch_thread_pool_is_sized_once_and_a_later_resize_is_refused(target, fp32_exports):
    from deploykit.runtimes.executorch import ExecuTorchModel

    artifact = fp32_exports(target).artifact
    assert ExecuTorchModel(artifact, threads=2).threads == 2
    with pytest.raises(DeployKitError, match="thread pool already runs 2 threads") as err:
        ExecuTorchModel(artifact, threads=1)  # resizing now would crash the process: refused, not done
    assert "its own process" in err.value.fix
