"""PyTorch -> `.pte` for ExecuTorch: torch.export, then `to_edge_transform_and_lower` with the XNNPACK
partitioner, then the ExecuTorch program. The operators are counted in the lowered program, before it is
serialized: inside each XNNPACK partition (the partition's own graph) and outside them.

An operator the XNNPACK partitioner leaves outside runs on ExecuTorch's portable kernels; one that has no
kernel there either cannot run at all, so the export stops naming it and the layer that calls it.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from deploykit.core.errors import DeployKitError, import_backend
from deploykit.export.torch_graph import module_path, unconvertible

BOOKKEEPING = ("executorch_call_delegate", "getitem")  # graph plumbing, not operators that compute


@dataclass
class LoweredProgram:
    delegated_ops: dict[str, int]  # op -> count, summed over the XNNPACK partitions
    partitions: int
    outside: list[dict] = field(default_factory=list)  # {"op", "layer"} of each op left outside XNNPACK

    def to_dict(self) -> dict:
        return {"xnnpack_partitions": self.partitions, "xnnpack_ops": self.delegated_ops,
                "outside_xnnpack": self.outside}


def import_executorch_export():
    partitioner = import_backend("executorch.backends.xnnpack.partition.xnnpack_partitioner", "executorch",
                                 package="executorch")
    return partitioner.XnnpackPartitioner, import_backend("executorch.exir", "executorch").to_edge_transform_and_lower


def lower_to_pte(model: torch.nn.Module, probe: torch.Tensor, path: Path) -> LoweredProgram:
    """Write `model` (eval, or a PT2E-converted GraphModule) as an XNNPACK-lowered `.pte`."""
    partitioner, lower = import_executorch_export()
    try:
        edge = lower(torch.export.export(model, (probe,)), partitioner=[partitioner()])
    except Exception as exc:  # noqa: BLE001 - export and lowering raise many error types
        raise unconvertible(model, probe, exc, "ExecuTorch") from exc
    lowered = inspect_lowered(edge.exported_program())
    _require_kernels(lowered)
    try:
        program = edge.to_executorch()
    except Exception as exc:  # noqa: BLE001
        raise unconvertible(model, probe, exc, "ExecuTorch") from exc
    Path(path).write_bytes(program.buffer)
    return lowered


def inspect_lowered(program) -> LoweredProgram:
    """Ops inside each XNNPACK partition and outside them, with the layer of each outside op."""
    delegated: Counter = Counter()
    partitions = 0
    for _, child in program.graph_module.named_children():
        if getattr(child, "backend_id", None) == "XnnpackBackend":
            partitions += 1
            delegated.update(op_name(n) for n in child.original_module.graph.nodes if n.op == "call_function")
    outside = [{"op": op_name(n), "layer": module_path(n)} for n in program.graph.nodes
               if n.op == "call_function" and op_name(n) not in BOOKKEEPING]
    return LoweredProgram(dict(sorted(delegated.items())), partitions, outside)


def op_name(node) -> str:
    """'aten.convolution' for an edge op (its overload and schema dropped), the function name otherwise."""
    target = node.target
    name = getattr(target, "__name__", str(target))
    schema = getattr(target, "_schema", None) or getattr(getattr(target, "_op", None), "_schema", None)
    if schema is not None:
        name = schema.name.replace("::", ".")
    return name


def _require_kernels(lowered: LoweredProgram) -> None:
    """Every op outside XNNPACK needs a kernel in ExecuTorch's runtime, or the program cannot run."""
    from executorch.runtime import Runtime

    kernels = {name.split(".")[0] for name in Runtime.get().operator_registry.operator_names}
    missing = [o for o in lowered.outside if o["op"].replace(".", "::", 1) not in kernels]
    if missing:
        first = missing[0]
        raise DeployKitError(f"ExecuTorch cannot lower {first['op']} in layer {first['layer']!r}: XNNPACK does not "
                             f"take it and ExecuTorch's runtime has no kernel for it"
                             + (f" ({len(missing)} such ops)" if len(missing) > 1 else ""),
                             fix="replace that operation in the model (or export to ONNX); nothing was written")


def pt2e_quantizer(per_channel: bool):
    """ExecuTorch's XNNPACK quantizer: int8 symmetric weights, int8 activations (histogram observer),
    a ReLU6 fused into the conv before it (`pt2e.fusing_clamps`)."""
    import_executorch_export()
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)

    from deploykit.export.pt2e import fusing_clamps

    return fusing_clamps(XNNPACKQuantizer)().set_global(get_symmetric_quantization_config(is_per_channel=per_channel))


class HalfProgram(torch.nn.Module):
    """`model` computing in fp16 behind an fp32 interface: the program takes and returns what the fp32 one
    does (the casts run outside XNNPACK, on ExecuTorch's portable kernels), every layer runs XNNPACK's fp16
    kernels."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()
