"""The ONNX target: fp32, fp16 or int8 ONNX, simplified, checked, and proven in ONNX Runtime.

int8 (`--precision int8` or `--int8`) is laid out for the runtime of `--device` (default: this machine's
ONNX Runtime): see `pipeline.targets.int8` and `export.qdq_layout`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from deploykit.core.errors import DeployKitError
from deploykit.core.options import choice
from deploykit.pipeline.targets.base import ExportContext, TargetBuild, register_target, require_parity
from deploykit.pipeline.targets.int8 import INT8_OPTIONS, refuse_int8_options

Precision = Literal["fp32", "fp16", "int8"]


def onnx_precision(options: dict) -> str:
    precision = options.get("precision") or ("int8" if options.get("int8") else "fp32")
    choice(precision, Precision, option="precision", what="ONNX target")
    if options.get("int8") and precision != "int8":
        raise DeployKitError(f"--int8 and --precision {precision} contradict each other", fix="drop one of them")
    return precision


def _variant(options: dict) -> str:
    precision = onnx_precision(options)
    return "" if precision == "fp32" else f".{precision}"


@register_target("onnx", ".onnx", options=(*INT8_OPTIONS, "precision", "dynamic_batch"), variant=_variant)
def build_onnx(ctx: ExportContext, staged: Path) -> TargetBuild:
    """fp32 ONNX; fp16 with a range scan; int8 calibrated QDQ laid out for the device's runtime."""
    precision = onnx_precision(ctx.options)
    if ctx.options.get("dynamic_batch") and precision != "fp32":
        raise DeployKitError(f"--dynamic-batch is fp32 only (the {precision} graph is checked at one batch size)",
                             fix="export it with --batch N")
    if precision == "int8":
        return _build_int8(ctx, staged)
    refuse_int8_options(ctx.options, precision)
    if precision == "fp16":
        return build_fp16_onnx(ctx, staged)
    return build_float_onnx(ctx, staged)


def _build_int8(ctx: ExportContext, staged: Path) -> TargetBuild:
    from deploykit.pipeline.targets.int8 import build_int8, int8_options, layout_for, target_device

    device = target_device(int8_options(ctx.options), "onnxruntime")
    return build_int8(ctx, staged, build_float_onnx, layout=layout_for(device), device=device)


def build_float_onnx(ctx: ExportContext, staged: Path) -> TargetBuild:
    from deploykit.export.onnx import DEFAULT_OPSET, count_ops, export_onnx
    from deploykit.runtimes.onnxruntime import OrtModel

    opset, dynamic = ctx.options.get("opset", DEFAULT_OPSET), bool(ctx.options.get("dynamic_batch"))
    ctx.stage("torch -> ONNX")
    result = export_onnx(ctx.deployed, ctx.probe, staged, opset=opset, dynamic_batch=dynamic, stage=ctx.stage)
    ctx.stage("fp32 parity (ONNX Runtime)")
    session = OrtModel(staged, threads=ctx.options.get("threads", 2))
    parity = require_parity(ctx.reference, session.run(ctx.probe.numpy()), "fp32", "exported ONNX (ONNX Runtime)")
    if dynamic:  # the probe twice over must give its outputs twice over: the batch axis really is free
        doubled = np.concatenate([ctx.probe.numpy()] * 2)
        require_parity(np.concatenate([ctx.reference] * 2), session.run(doubled), "fp32",
                       f"exported ONNX at batch {len(doubled)} (ONNX Runtime)")
    return TargetBuild(precision="fp32", parity=parity, warnings=result.warnings,
                       details={"opset": opset, "simplified": result.simplified, "op_counts": count_ops(staged),
                                "parity_runtime": "onnxruntime", "dynamic_batch": dynamic})


def build_fp16_onnx(ctx: ExportContext, staged: Path) -> TargetBuild:
    """An fp16 graph (fp32 inputs and outputs), layers whose activations leave the fp16 range kept fp32."""
    import onnx

    from deploykit.export.onnx import count_ops
    from deploykit.export.onnx_fp16 import convert_to_fp16
    from deploykit.pipeline.targets.fp16 import layers_to_keep, scan_fp16_range
    from deploykit.runtimes.onnxruntime import OrtModel

    float_build = build_float_onnx(ctx, staged)
    ctx.stage("fp16 range scan")
    scan = scan_fp16_range(ctx, ctx.options.get("calib"))
    converted, kept = convert_to_fp16(onnx.load(str(staged)), keep_fp32=layers_to_keep(scan))
    onnx.save(converted, str(staged))
    actual = OrtModel(staged, threads=ctx.options.get("threads", 2)).run(ctx.probe.numpy())
    parity = require_parity(ctx.reference, actual, "fp16", "the fp16 ONNX (ONNX Runtime)")
    details = {**float_build.details, "op_counts": count_ops(staged),
               "fp16_range": {**scan.to_dict(), "kept_fp32_nodes": kept}, "float_parity": float_build.parity.to_dict()}
    return TargetBuild(precision="fp16", parity=parity, details=details, warnings=float_build.warnings)
