"""The ONNX target: export, simplify, check, and prove parity in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploykit.core.errors import DeployKitError
from deploykit.pipeline.quantize import INT8_OPTIONS, wants_int8
from deploykit.pipeline.targets import ExportContext, TargetBuild, register_target, require_parity


@register_target("onnx", ".onnx", options=(*INT8_OPTIONS, "dynamic_batch"),
                 variant=lambda o: ".int8" if o.get("int8") else "")
def build_onnx(ctx: ExportContext, staged: Path) -> TargetBuild:
    """fp32 ONNX; with --int8, calibrated int8 QDQ ONNX (see pipeline.quantize)."""
    if wants_int8(ctx.options):
        if ctx.options.get("dynamic_batch"):
            raise DeployKitError("--dynamic-batch is not supported with --int8 yet (the QDQ graph is calibrated "
                                 "and checked at one batch size)", fix="export the int8 model with --batch N")
        from deploykit.pipeline.quantize import build_int8

        return build_int8(ctx, staged, export_float=build_float_onnx)
    return build_float_onnx(ctx, staged)


def build_float_onnx(ctx: ExportContext, staged: Path) -> TargetBuild:
    from deploykit.export.onnx import DEFAULT_OPSET, count_ops, export_onnx
    from deploykit.runtimes.onnxruntime import OrtModel

    opset, dynamic = ctx.options.get("opset", DEFAULT_OPSET), bool(ctx.options.get("dynamic_batch"))
    result = export_onnx(ctx.deployed, ctx.probe, staged, opset=opset, dynamic_batch=dynamic)
    session = OrtModel(staged, threads=ctx.options.get("threads", 2))
    parity = require_parity(ctx.reference, session.run(ctx.probe.numpy()), "fp32", "exported ONNX (ONNX Runtime)")
    if dynamic:  # the probe twice over must give its outputs twice over: the batch axis really is free
        doubled = np.concatenate([ctx.probe.numpy()] * 2)
        require_parity(np.concatenate([ctx.reference] * 2), session.run(doubled), "fp32",
                       f"exported ONNX at batch {len(doubled)} (ONNX Runtime)")
    return TargetBuild(precision="fp32", parity=parity, warnings=result.warnings,
                       details={"opset": opset, "simplified": result.simplified, "op_counts": count_ops(staged),
                                "parity_runtime": "onnxruntime", "dynamic_batch": dynamic})
