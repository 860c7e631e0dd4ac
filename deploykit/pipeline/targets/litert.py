"""The LiteRT target: a `.tflite` for Android (and any CPU LiteRT runs on), converted by litert-torch from
the deploy form, checked for structure (no batch norm, one conv per deployed conv: counted in the file's
flatbuffer) and run in LiteRT's interpreter with XNNPACK against the float model. int8: `edge_int8`."""

from __future__ import annotations

from pathlib import Path

import torch

from deploykit.pipeline.targets.base import ExportContext, TargetBuild, register_target
from deploykit.pipeline.targets.edge import EdgeBackend, Structure, build_edge, variant
from deploykit.pipeline.targets.int8 import INT8_OPTIONS

CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D")
COUNTED = ("convolutions: CONV_2D + DEPTHWISE_CONV_2D + TRANSPOSE_CONV + CONV_3D operators in the .tflite "
           "flatbuffer's main subgraph; batch norm: batch-norm nodes of the torch.export program handed to the "
           "converter (TFLite has no batch-norm operator: a norm left over would be lowered to MUL and ADD, "
           "counted in `ops`)")


def _write(model: torch.nn.Module, probe: torch.Tensor, path: Path, quantizer=None, *,
           fp16_weights: bool = False) -> Structure:
    from deploykit.export.litert import convert_tflite
    from deploykit.runtimes.litert import op_counts
    from deploykit.export.torch_graph import batch_norm_nodes

    convert_tflite(model, probe, path, quantizer, fp16_weights=fp16_weights)
    ops = op_counts(path)
    return Structure(sum(ops.get(op, 0) for op in CONV_OPS), batch_norm_nodes(model, probe), 0, COUNTED, ops)


def _write_fp16(model: torch.nn.Module, probe: torch.Tensor, path: Path) -> Structure:
    return _write(model, probe, path, fp16_weights=True)


def _load(path: Path, threads: int):
    from deploykit.runtimes.litert import LiteRTModel

    return LiteRTModel(path, threads=threads)


def _quantizer(per_channel: bool):
    from deploykit.export.litert import pt2e_quantizer

    return pt2e_quantizer(per_channel)


FP16_NOTE = ("TFLite float16 quantization: weights stored fp16 behind DEQUANTIZE ops (half the file); a GPU "
             "delegate or an fp16-capable ARM CPU computes in fp16, other CPUs (this x86 host) dequantize once and "
             "compute in fp32")
LITERT = EdgeBackend("litert", "LiteRT (XNNPACK)", _write, _write_fp16, FP16_NOTE, _load, _quantizer,
                     "litert-torch PT2E: int8 activations (per-tensor, histogram observer), int8 symmetric weights",
                     fold_quantize=False)


@register_target("litert", ".tflite", options=(*INT8_OPTIONS, "precision"), variant=variant("litert"))
def build_litert(ctx: ExportContext, staged: Path) -> TargetBuild:
    return build_edge(ctx, staged, LITERT)
