"""The ONNX target: export, simplify, check, and prove parity in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

from deploykit.pipeline.targets import ExportContext, TargetBuild, register_target, require_parity


@register_target("onnx", ".onnx")
def build_onnx(ctx: ExportContext, staged: Path) -> TargetBuild:
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
