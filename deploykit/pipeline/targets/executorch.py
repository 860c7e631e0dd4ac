"""The ExecuTorch target: a `.pte` program, the deploy form lowered to XNNPACK (`to_edge_transform_and_lower`),
checked for structure (no batch norm, one conv per deployed conv: counted in the lowered program, inside
and outside its XNNPACK partitions) and run in ExecuTorch's runtime against the float model. int8:
`edge_int8` (PT2E with the XNNPACK quantizer)."""

from __future__ import annotations

from pathlib import Path

import torch

from deploykit.core.errors import DeployKitError
from deploykit.pipeline.targets.base import ExportContext, TargetBuild, register_target
from deploykit.pipeline.targets.edge import EdgeBackend, Structure, build_edge, variant
from deploykit.pipeline.targets.int8 import INT8_OPTIONS

COUNTED = ("aten.convolution and batch-norm ops of the lowered edge program before serialization: inside each "
           "XNNPACK partition (the partition's own graph) plus those left outside; cross-checked against the conv "
           "nodes of the XNNPACK graphs serialized in the .pte (read back with flatc and XNNPACK's schema)")


def _write(model: torch.nn.Module, probe: torch.Tensor, path: Path, quantizer=None) -> Structure:
    """(`quantizer` unused: the XNNPACK partitioner reads the Q/DQ pairs of the PT2E graph itself.)"""
    from deploykit.export.executorch import lower_to_pte
    from deploykit.runtimes.executorch import program_structure

    lowered = lower_to_pte(model, probe, path)
    ops = dict(lowered.delegated_ops)
    for entry in lowered.outside:
        ops[f"outside XNNPACK: {entry['op']}"] = ops.get(f"outside XNNPACK: {entry['op']}", 0) + 1
    convs = sum(n for op, n in ops.items() if op.endswith("aten.convolution"))
    norms = sum(n for op, n in ops.items() if "batch_norm" in op)
    in_file = {op: sum(by_type.values()) for op, by_type in program_structure(path)["xnnpack_compute_ops"].items()}
    file_convs = sum(n for op, n in in_file.items() if "Conv" in op) + ops.get("outside XNNPACK: aten.convolution", 0)
    if file_convs != convs:
        raise DeployKitError(f"the .pte's XNNPACK graphs hold {file_convs} convolutions, the lowered program {convs}",
                             fix="report this model; nothing was written")
    return Structure(convs, norms, 0, COUNTED, {"partitions": lowered.partitions, **ops,
                                               "XNNPACK nodes in the .pte": in_file})


def _write_fp16(model: torch.nn.Module, probe: torch.Tensor, path: Path) -> Structure:
    from deploykit.export.executorch import HalfProgram

    return _write(HalfProgram(model), probe, path)


def _load(path: Path, threads: int):
    from deploykit.runtimes.executorch import ExecuTorchModel

    return ExecuTorchModel(path, threads=threads)


def _quantizer(per_channel: bool):
    from deploykit.export.executorch import pt2e_quantizer

    return pt2e_quantizer(per_channel)


FP16_NOTE = ("an fp16 program behind an fp32 interface: every layer on XNNPACK's fp16 kernels (native on ARMv8.2+, "
             "emulated and slower on x86), the input and output casts on ExecuTorch's portable kernels")
EXECUTORCH = EdgeBackend("executorch", "ExecuTorch (XNNPACK)", _write, _write_fp16, FP16_NOTE, _load, _quantizer,
                         "ExecuTorch XNNPACKQuantizer (PT2E): int8 activations (per-tensor, histogram observer), "
                         "int8 symmetric weights", fold_quantize=True)


@register_target("executorch", ".pte", options=(*INT8_OPTIONS, "precision"), variant=variant("executorch"))
def build_executorch(ctx: ExportContext, staged: Path) -> TargetBuild:
    return build_edge(ctx, staged, EXECUTORCH)
