"""Core ML target: what can be proved on any OS (interface, MIL ops, precision, size, the fp16 guard,
error translation), and parity where Core ML runs (macOS)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ct = pytest.importorskip("coremltools", reason='coremltools is not installed: pip install "deploykit[coreml]"')

from deploykit import zoo  # noqa: E402
from deploykit.core.errors import DeployKitError  # noqa: E402
from deploykit.core.manifest import Manifest, manifest_path  # noqa: E402
from deploykit.core.preprocess import Preprocess  # noqa: E402
from deploykit.export.coreml import CoreMLConfig, convert_coreml, image_input, save_mlpackage  # noqa: E402
from deploykit.export.coreml_inspect import summarize_mlpackage  # noqa: E402
from deploykit.pipeline.export import DEPLOY_PASSES, ExportRequest, export, probe_batch  # noqa: E402
from deploykit.passes.runner import run_passes  # noqa: E402
from deploykit.pipeline.targets import ExportContext  # noqa: E402
from deploykit.pipeline.targets.coreml import build_coreml  # noqa: E402

def settled_weights(name: str, path: Path, size: int = 64) -> Path:
    """Weights with BN statistics measured in train-mode passes over random inputs, so activations
    stay O(1) as in a trained network. (At random init MobileOne's branch sums grow block by block
    past the fp16 range, and the fp16 guard rightly keeps the deep layers in fp32.)"""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = zoo.create(name)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the passes
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, 3, size, size))
    save_file({k: v.contiguous() for k, v in model.eval().state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def s0_weights(tmp_path_factory) -> Path:
    return settled_weights("mobileone_s0", tmp_path_factory.mktemp("w") / "s0.safetensors")


def export_coreml(model: str, out: Path, weights: Path | None = None, size: int | None = 64, **options):
    return export(ExportRequest(model=model, target="coreml", weights=weights, out_dir=out, input_size=size,
                                options=options))


VARIANTS = {"fp16": {}, "fp32": {"precision": "fp32"}, "int8": {"weights_int8": True}}


def test_mlpackage_structure_in_three_precisions(s0_weights, tmp_path):
    sizes = {}
    for variant, options in VARIANTS.items():
        outcome = export_coreml("mobileone_s0", tmp_path / variant, s0_weights, **options)
        check_structure(outcome, variant)
        sizes[variant] = outcome.manifest.size_bytes
    assert sizes["int8"] < 0.6 * sizes["fp16"] < 0.6 * sizes["fp32"], sizes


def check_structure(outcome, variant: str) -> None:
    details, manifest = outcome.build.details, Manifest.read(manifest_path(outcome.artifact))
    assert outcome.artifact.suffix == ".mlpackage" and outcome.artifact.is_dir()
    assert manifest.target == "coreml" and manifest.precision == variant and manifest.size_bytes > 0
    assert manifest.parity["passed"] is None and "macOS" in manifest.parity["note"]
    assert details["conv_count"] == details["onnx_conv_count"] == 43
    assert "batch_norm" not in details["op_histogram"]
    assert details["interface"]["inputs"] == [{"name": "input", "kind": "tensor", "shape": [1, 3, 64, 64],
                                               "dtype": "float32"}]
    assert details["interface"]["outputs"][0]["shape"] == [1, 1000]
    check = details["precision_check"]
    assert check["passed"] and check["requested"] == ("fp32" if variant == "fp32" else "fp16"), check
    if variant != "fp32":
        assert check["fp32_ops"] == 0, "settled weights stay in range: nothing should be kept fp32"
    if variant == "int8":
        quantized = details["weight_quantization"]["int8_weights"]
        assert quantized > 0 and details["op_histogram"]["constexpr_affine_dequantize"] == quantized


class Overflowing(nn.Module):
    """conv1's weights scaled so its activations pass the fp16 maximum; conv2 scales them back."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 1)
        self.act, self.head = nn.ReLU(), nn.Linear(8, 10)
        with torch.no_grad():
            self.conv1.weight.mul_(2e5)
            self.conv1.bias.mul_(2e5)
            self.conv2.weight.mul_(1e-5)

    def forward(self, x):
        y = self.act(self.conv3(self.act(self.conv2(self.act(self.conv1(x))))))
        return self.head(y.mean((2, 3)))


def context_for(model: nn.Module, size: int = 16, **options) -> ExportContext:
    probe = probe_batch(1, 3, size)
    with torch.no_grad():
        reference = model.eval()(probe).numpy()
    deployed = run_passes(model, [(n, None) for n in DEPLOY_PASSES], probe).model
    preprocess = Preprocess(input_size=size, resize=None)
    return ExportContext("tiny", model, deployed, probe, reference, preprocess, options)


def _conv_dtypes(path: Path) -> list[str]:
    return [op.output_types[0] for op in summarize_mlpackage(path).ops if op.type == "conv"]


def test_fp16_guard_keeps_overflowing_layers_fp32(tmp_path):
    model = Overflowing()
    with torch.no_grad():
        assert float(model.act(model.conv1(probe_batch(1, 3, 16))).abs().max()) > 65504, "must overflow fp16"
    build = build_coreml(context_for(model), tmp_path / "guarded.mlpackage")
    assert set(build.details["fp16_range"]["flagged"]) == {"conv1", "conv2"}  # conv2 reads the large tensor
    assert _conv_dtypes(tmp_path / "guarded.mlpackage") == ["FLOAT32", "FLOAT32", "FLOAT16"]
    check = build.details["precision_check"]
    assert check["passed"] and check["kept_fp32_by_guard"] == 3
    # the same conversion without the guard computes conv1 in fp16: the overflow the guard prevents
    unguarded = convert_coreml(model, probe_batch(1, 3, 16), CoreMLConfig())
    save_mlpackage(unguarded.mlmodel, tmp_path / "plain.mlpackage")
    assert _conv_dtypes(tmp_path / "plain.mlpackage") == ["FLOAT16"] * 3


class WithCummax(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.scan = Cumulative()

    def forward(self, x):
        return self.scan(self.conv(x)).mean((2, 3))


class Cumulative(nn.Module):
    def forward(self, x):
        return torch.cummax(x, dim=1)[0]  # no Core ML converter for cummax (coremltools 9.0)


def test_unsupported_op_is_one_error_naming_op_and_layer():
    with pytest.raises(DeployKitError) as info:
        convert_coreml(WithCummax().eval(), torch.randn(1, 3, 8, 8), CoreMLConfig())
    assert "op 'cummax'" in info.value.message and "scan (Cumulative)" in info.value.message


def test_image_input_folds_per_channel_std_exactly():
    model = run_passes(zoo.create("mobileone_s0").eval(), [(n, None) for n in DEPLOY_PASSES],
                       probe_batch(1, 3, 32)).model
    preprocess = zoo.get("mobileone_s0").preprocess  # ImageNet: per-channel std
    original = model.stage0.reparam_conv.weight.clone()
    folded, image = image_input(model, preprocess)
    pixels = torch.randint(0, 256, (2, 3, 32, 32)).float()
    core_ml_input = pixels * image.scale + torch.tensor(image.bias).reshape(1, 3, 1, 1)  # Core ML's formula
    normalised = (pixels * preprocess.scale - torch.tensor(preprocess.mean).reshape(1, 3, 1, 1)) \
        / torch.tensor(preprocess.std).reshape(1, 3, 1, 1)
    with torch.no_grad():
        expected, actual = model(normalised), folded(core_ml_input)
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert torch.equal(model.stage0.reparam_conv.weight, original), "the caller's model must not change"


def test_image_input_package_takes_an_image(s0_weights, tmp_path):
    outcome = export_coreml("mobileone_s0", tmp_path, s0_weights, image_input=True)
    assert outcome.build.details["interface"]["inputs"] == [{"name": "input", "kind": "image", "shape": [64, 64],
                                                             "color": "RGB"}]
    assert outcome.build.details["precision_check"]["passed"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploykit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_cli_coreml_and_misplaced_options(tmp_path):
    done = run_cli("export", "mobileone_s0", "--target", "coreml", "--input-size", "64", "--compute-units",
                   "cpu_and_ne", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "43 conv, 0 batch_norm, fp16" in done.stdout and "needs macOS" in done.stdout
    noise = ("has not been tested with coremltools", "Running MIL", "Converting PyTorch Frontend")
    assert not [n for n in noise if n in done.stderr], done.stderr  # coremltools' bars and notice (issue 16)
    assert "convert (coremltools)" in done.stderr  # our own progress line instead
    assert Manifest.read(tmp_path / "mobileone_s0.mlpackage.manifest.json").extra["compute_units"] == "cpu_and_ne"
    wrong = run_cli("export", "mobileone_s0", "--target", "onnx", "--compute-units", "all", "--out",
                    str(tmp_path / "x"), cwd=tmp_path)
    assert wrong.returncode != 0 and "--target onnx does not take --compute-units" in wrong.stderr
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.slow
def test_mobileone_s1_at_224(variant, tmp_path):
    """The acceptance figures: `deploykit export mobileone_s1 --target coreml` as the CLI runs it
    (random init, so the fp16 guard keeps the layers whose activations pass its threshold in fp32)."""
    outcome = export_coreml("mobileone_s1", tmp_path, size=None, **VARIANTS[variant])
    d = outcome.build.details
    assert d["conv_count"] == d["onnx_conv_count"] == 43 and "batch_norm" not in d["op_histogram"]
    assert d["precision_check"]["passed"] and outcome.manifest.precision == variant
    print(f"\nmobileone_s1@224 {variant}: {outcome.manifest.size_bytes / 1e6:.2f} MB, convs {d['conv_count']}, "
          f"ops {d['op_histogram']}, precision {d['precision_check']}, "
          f"weights {d.get('weight_quantization')}, fp16 range {d.get('fp16_range', {}).get('max_abs_activation')}",
          f"kept fp32 {d.get('fp16_range', {}).get('kept_fp32_ops')}")


def test_shape_arithmetic_converts(tmp_path):
    """EfficientNet-Lite's TF "SAME" padding computes on the input shape: the TorchScript `int` op
    that coremltools 9.0 fails on under numpy >= 2.4 (export/coreml_compat.py)."""
    details = export_coreml("efficientnet_lite0", tmp_path).build.details
    assert details["conv_count"] == details["onnx_conv_count"] > 0 and details["precision_check"]["passed"]


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.names())
def test_every_zoo_model_converts(name, tmp_path):
    details = export_coreml(name, tmp_path, size=64).build.details
    assert details["conv_count"] == details["onnx_conv_count"] and "batch_norm" not in details["op_histogram"]
    assert details["precision_check"]["passed"]


@pytest.mark.slow
def test_efficientnet_lite0_real_weights_real_images_stay_fp16(data_dir, tmp_path):
    """Trained weights and ImageNet images: the range scan finds nothing, the program is all fp16."""
    from deploykit.zoo.efficientnet_lite import load_pretrained_efficientnet_lite0

    model = load_pretrained_efficientnet_lite0()
    ctx = context_for(model, size=224, calib=data_dir / "imagenet_val1300")
    ctx.preprocess = zoo.get("efficientnet_lite0").preprocess  # the calibration images need its own
    build = build_coreml(ctx, tmp_path / "lite0.mlpackage")
    assert build.details["fp16_range"]["flagged"] == {} and build.details["precision_check"]["fp32_ops"] == 0
    assert build.details["conv_count"] == build.details["onnx_conv_count"]
    print(f"\nefficientnet_lite0 fp16 range over ImageNet images: {build.details['fp16_range']}")


@pytest.mark.parametrize("variant", ["fp16", "fp32"])
@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML predict needs macOS")
@pytest.mark.needs_macos
def test_parity_in_core_ml(variant, s0_weights, tmp_path):
    outcome = export_coreml("mobileone_s0", tmp_path, s0_weights, **VARIANTS[variant])
    assert outcome.build.parity.passed and outcome.manifest.parity["runtime"].startswith("coreml")


@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML W8A8 calibration runs the model: macOS only")
@pytest.mark.needs_macos
def test_w8a8_with_calibration_images(s0_weights, data_dir, tmp_path):
    outcome = export_coreml("mobileone_s0", tmp_path, s0_weights, precision="int8", calib=data_dir / "imagenet_val1300")
    assert outcome.build.parity.passed and outcome.build.details["weight_quantization"]["passed"]


@pytest.mark.skipif(platform.system() == "Darwin", reason="checks the errors off macOS")
def test_w8a8_off_macos_is_refused_with_the_alternative(tmp_path):
    with pytest.raises(DeployKitError, match="needs macOS") as info:
        export_coreml("mobileone_s0", tmp_path, precision="int8", calib=tmp_path)
    assert "--weights-int8" in info.value.fix
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(platform.system() == "Darwin", reason="checks the error off macOS")
def test_runtime_off_macos_is_a_clear_error(tmp_path):
    from deploykit.runtimes.coreml import CoreMLModel

    with pytest.raises(DeployKitError, match="needs macOS"):
        CoreMLModel(tmp_path / "any.mlpackage")
