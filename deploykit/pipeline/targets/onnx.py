"""The ONNX target: export, simplify, check, and prove parity in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

from deploykit.pipeline.quantize import INT8_OPTIONS, wants_int8
from deploykit.pipeline.targets import ExportContext, TargetBuild, register_target, require_parity


@register_target("onnx", ".onnx", options=INT8_OPTIONS, variant=lambda o: ".int8" if o.get("int8") else "")
def build_onnx(ctx: ExportContext, staged: Path) -> TargetBuild:
    """fp32 ONNX; with --int8, calibrated int8 QDQ ONNX (see pipeline.quantize)."""
    if wants_int8(ctx.options):
        from deploykit.pipeline.quantize import build_int8

        return build_int8(ctx, staged, export_float=build_float_onnx)
    return build_float_onnx(ctx, staged)


def build_float_onnx(ctx: ExportContext, staged: Path) -> TargetBuild:
    from deploykit.export.onnx import DEFAULT_OPSET, count_ops, export_onnx
    from deploykit.runtimes.onnxruntime import OrtModel

    opset = ctx.options.get("opset", DEFAULT_OPSET)
    result = export_onnx(ctx.deployed, ctx.probe, staged, opset=opset)
    actual = OrtModel(staged, threads=ctx.options.get("threads", 2)).run(ctx.probe.numpy())
    parity = require_parity(ctx.reference, actual, "fp32", "exported ONNX (ONNX Runtime)")
    ops = count_ops(staged)
    return TargetBuild(precision="fp32", parity=parity, warnings=result.warnings,
                       details={"opset": opset, "simplified": result.simplified, "op_counts": ops,
                                "parity_runtime": "onnxruntime"})
