"""The Core ML target: an ML Program (.mlpackage) from the deploy model, its structure and precision
checked from the spec on any OS, its outputs compared with PyTorch where Core ML runs (macOS)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from deploykit.core.errors import DeployKitError
from deploykit.pipeline.targets.fp16 import calibration_batches, layers_to_keep, scan_fp16_range
from deploykit.pipeline.targets.base import (ExportContext, TargetBuild, precision_tag, register_target,
                                             require_parity)

OPTIONS = ("precision", "compute_units", "image_input", "weights_int8", "calib")
PRECISIONS = ("fp16", "fp32", "int8")  # int8 = W8A8 (activations calibrated on --calib images)
W8A8_IMAGES = 128  # activation calibration images for Core ML W8A8
NOT_ON_MACOS = "Core ML prediction needs macOS; checked here: interface, ops, precision, size"


@dataclass(frozen=True)
class CoreMLOptions:
    precision: str = "fp16"
    compute_units: str = "all"
    image_input: bool = False
    weights_int8: bool = False
    calib: Path | None = None

    @property
    def compute_precision(self) -> str:
        return "fp32" if self.precision == "fp32" else "fp16"  # W8A8 dequantizes into fp16

    @property
    def manifest_precision(self) -> str:
        return "int8" if self.weights_int8 or self.precision == "int8" else self.precision


def _variant(options: dict) -> str:
    opts = coreml_options(options)
    return precision_tag("w8" if opts.weights_int8 else opts.precision, "fp16")


@register_target("coreml", ".mlpackage", options=OPTIONS, variant=_variant)
def build_coreml(ctx: ExportContext, staged: Path) -> TargetBuild:
    from deploykit.export.coreml import save_mlpackage

    opts = coreml_options(ctx.options)
    scan = scan_fp16_range(ctx, opts.calib) if opts.compute_precision == "fp16" else None
    model, image = _model_and_image(ctx, opts)
    ctx.stage("convert (coremltools)")
    conversion = _convert(ctx, model, image, opts, scan)
    ctx.stage("save and check the package")
    save_mlpackage(conversion.mlmodel, staged)
    details = structural_checks(ctx, model, staged, opts, conversion.kept_fp32)
    details.update(_settings_record(opts, image, scan, conversion.kept_fp32))
    build = TargetBuild(precision=opts.manifest_precision, parity=None, parity_note=NOT_ON_MACOS,
                        details=details, warnings=conversion.warnings + _unit_warnings(opts))
    _run_parity_if_possible(ctx, staged, opts, build)
    return build


def coreml_options(options: dict) -> CoreMLOptions:
    from deploykit.export.coreml import COMPUTE_UNITS

    opts = CoreMLOptions(**{k: options[k] for k in OPTIONS if options.get(k) is not None})
    _require(opts.precision in PRECISIONS, f"--precision {opts.precision}", f"one of {', '.join(PRECISIONS)}")
    _require(opts.compute_units in COMPUTE_UNITS, f"--compute-units {opts.compute_units}",
             f"one of {', '.join(COMPUTE_UNITS)}")
    _require(opts.precision != "int8" or opts.calib is not None, "--precision int8 without --calib",
             "give calibration images with --calib DIR, or use --weights-int8 (weight-only, no data needed)")
    if opts.precision == "int8":
        from deploykit.runtimes.coreml import is_macos

        _require(is_macos(), "--precision int8 here: Core ML W8A8 needs macOS (coremltools calibrates "
                 "activations by running the model in Core ML)",
                 "use --weights-int8 (weight-only int8, no data needed), or run this export on a Mac")
    return opts


def _require(ok: bool, what: str, fix: str) -> None:
    if not ok:
        raise DeployKitError(f"Core ML target: invalid {what}", fix=fix)


def _model_and_image(ctx: ExportContext, opts: CoreMLOptions):
    if not opts.image_input:
        return ctx.deployed, None
    from deploykit.export.coreml import image_input

    if ctx.probe.shape[0] != 1:
        raise DeployKitError("--image-input takes one image per prediction", fix="use --batch 1")
    return image_input(ctx.deployed, ctx.preprocess)


def _convert(ctx: ExportContext, model, image, opts: CoreMLOptions, scan):
    from deploykit.export.coreml import CoreMLConfig, convert_coreml, quantize_activations_int8

    keep = {} if scan is None else layers_to_keep(scan)
    config = CoreMLConfig(precision=opts.compute_precision, compute_units=opts.compute_units, image=image,
                          weights_int8=opts.weights_int8, keep_fp32=keep, deployment_target=_deployment(opts))
    conversion = convert_coreml(model, ctx.probe, config)  # the trace fixes shapes; an image input has the same
    if opts.precision == "int8":
        samples = [b.numpy() for b in calibration_batches(ctx, opts.calib, W8A8_IMAGES)]
        conversion.mlmodel = quantize_activations_int8(conversion.mlmodel, samples)
    return conversion


def _deployment(opts: CoreMLOptions) -> str:
    return "iOS17" if opts.precision == "int8" else "iOS16"  # activation quantize ops arrived in iOS 17


def structural_checks(ctx: ExportContext, model, staged: Path, opts: CoreMLOptions, kept: dict) -> dict:
    """Interface, no batch norm, as many convs as the ONNX deploy graph, precision: or no export."""
    from deploykit.export.coreml_inspect import check_precision, check_weight_quantization, summarize_mlpackage

    summary = summarize_mlpackage(staged)
    ops = summary.histogram()
    details = {"interface": {"inputs": summary.inputs, "outputs": summary.outputs}, "op_histogram": ops,
               "conv_count": ops.get("conv", 0), "onnx_conv_count": onnx_conv_count(model, ctx.probe, ctx.options),
               "precision_check": check_precision(summary, opts.compute_precision, kept)}
    if opts.manifest_precision == "int8":
        details["weight_quantization"] = check_weight_quantization(summary)
    _verify(details, _interface_problems(ctx, summary, opts), ops)
    return details


def onnx_conv_count(model, probe: torch.Tensor, options: dict) -> int:
    """Conv nodes of the same model exported by the ONNX target's exporter (the reference count)."""
    from deploykit.export.onnx import DEFAULT_OPSET, count_ops, export_onnx

    with tempfile.TemporaryDirectory(prefix="deploykit-coreml-onnx-") as tmp:
        path = Path(tmp) / "deploy.onnx"
        export_onnx(model, probe, path, opset=options.get("opset", DEFAULT_OPSET))
        return count_ops(path).get("Conv", 0)


def _interface_problems(ctx: ExportContext, summary, opts: CoreMLOptions) -> list[str]:
    shape = list(ctx.probe.shape)
    want_in = ({"name": "input", "kind": "image", "shape": shape[2:]} if opts.image_input
               else {"name": "input", "kind": "tensor", "shape": shape, "dtype": "float32"})
    want_out = {"name": "logits", "kind": "tensor", "shape": list(ctx.reference.shape), "dtype": "float32"}
    if len(summary.inputs) != 1 or len(summary.outputs) != 1:
        return [f"expected one input and one output, found {summary.inputs} and {summary.outputs}"]
    return [f"{got} is not the expected {want}" for got, want in ((summary.inputs[0], want_in),
                                                                   (summary.outputs[0], want_out))
            if any(got.get(k) != v for k, v in want.items())]


def _verify(details: dict, problems: list[str], ops: dict) -> None:
    if ops.get("batch_norm", 0):
        problems.append(f"{ops['batch_norm']} batch_norm ops left (fold_bn should have removed them)")
    if details["conv_count"] != details["onnx_conv_count"]:
        problems.append(f"{details['conv_count']} conv ops, the ONNX deploy graph has "
                        f"{details['onnx_conv_count']}")
    for check in ("precision_check", "weight_quantization"):
        if check in details and not details[check]["passed"]:
            problems.append(f"{check.replace('_', ' ')} failed: {details[check]}")
    if problems:
        raise DeployKitError("the Core ML package failed its checks: " + "; ".join(problems),
                             fix="report this model; nothing was written")


def _settings_record(opts: CoreMLOptions, image, scan, kept: dict) -> dict:
    record = {"compute_precision": opts.compute_precision, "compute_units": opts.compute_units,
              "deployment_target": _deployment(opts), "quantization": _quantization(opts)}
    if image is not None:
        record["image_input"] = {"scale": image.scale, "bias": list(image.bias),
                                 "color_layout": image.color_layout}
    if scan is not None:
        record["fp16_range"] = {**scan.to_dict(), "kept_fp32_ops": kept}
    return record


def _quantization(opts: CoreMLOptions) -> str | None:
    if opts.precision == "int8":
        return "W8A8 (activations calibrated, weights per-channel symmetric)"
    return "weights int8 (per-channel symmetric)" if opts.weights_int8 else None


def _unit_warnings(opts: CoreMLOptions) -> list[str]:
    if opts.compute_precision == "fp32" and opts.compute_units == "cpu_and_ne":
        return ["the Neural Engine computes in fp16 only: an fp32 program runs on the CPU instead"]
    return []


def _run_parity_if_possible(ctx: ExportContext, staged: Path, opts: CoreMLOptions, build: TargetBuild) -> None:
    from deploykit.runtimes.coreml import CoreMLModel, is_macos

    if not is_macos():
        return
    runtime = CoreMLModel(staged, compute_units=opts.compute_units)
    if opts.image_input:
        images, batch = image_probe(ctx)
        with torch.no_grad():
            reference = ctx.float_model(batch).numpy()
        actual = runtime.run_images(images)
    else:
        reference, actual = ctx.reference, runtime.run(ctx.probe.numpy())
    build.parity = require_parity(reference, actual, opts.manifest_precision, "Core ML package (Core ML runtime)")
    build.details["parity_runtime"] = f"coreml ({opts.compute_units})"


def image_probe(ctx: ExportContext, seed: int = 0):
    """Seeded random RGB images at the input size, and the same pixels through the one preprocessing code."""
    from PIL import Image

    from deploykit.data.preprocess import preprocess_image

    size = ctx.preprocess.input_size
    pixels = np.random.default_rng(seed).integers(0, 256, (ctx.probe.shape[0], size, size, 3), dtype=np.uint8)
    images = [Image.fromarray(p).convert("L" if ctx.preprocess.channels == "L" else "RGB") for p in pixels]
    exact = replace(ctx.preprocess, resize=None)  # the image is already input-sized: no resize, no crop
    return images, torch.from_numpy(np.stack([preprocess_image(i, exact) for i in images]))
