"""PyTorch -> ONNX, checked and simplified. The only module that calls the torch ONNX exporter.

We use the TorchScript-based exporter (`dynamo=False`): for static-shape conv nets it gives a compact,
constant-folded graph with no extra dependency (onnxscript); the dynamo exporter can replace it here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from deploykit.core.errors import DeployKitError

DEFAULT_OPSET = 17


@dataclass
class OnnxExportResult:
    path: Path
    simplified: bool
    warnings: list[str] = field(default_factory=list)


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, *, opset: int = DEFAULT_OPSET,
                simplify: bool = True, dynamic_batch: bool = False,
                stage: Callable[[str], None] | None = None) -> OnnxExportResult:
    """Write `model` traced on `example` to `path` (the caller makes the path temporary). The batch axis is
    static (`example`'s) unless `dynamic_batch`: static shapes are what TensorRT and Core ML plan best.
    `stage(name)` is told when simplifying starts (seconds on big graphs)."""
    import onnx

    _torch_export(model, example, path, opset, dynamic_batch)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    result = OnnxExportResult(path=path, simplified=False)
    if simplify:
        if stage is not None:
            stage("simplify (onnxsim)")
        simplified, message = _simplify(proto)
        if simplified is None:
            result.warnings.append(f"onnxsim failed ({message}); kept the unsimplified graph")
        else:
            onnx.checker.check_model(simplified)
            onnx.save(simplified, str(path))
            result.simplified = True
    return result


def _torch_export(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int,
                  dynamic_batch: bool) -> None:
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice is not the user's concern
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["logits"], do_constant_folding=True,
                              dynamic_axes=axes)
        except Exception as exc:  # noqa: BLE001 - exporter errors name the unsupported op
            raise DeployKitError(f"ONNX export failed: {exc}",
                                 fix="try another --opset, or report the op named above") from exc


def _simplify(proto):
    """onnxsim's result, or (None, reason); a simplifier failure never fails an export."""
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(proto)
    except Exception as exc:  # noqa: BLE001 - onnxsim raises bare RuntimeErrors from C++
        return None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (simplified, "") if ok else (None, "its own check failed")


def count_ops(path: Path) -> dict[str, int]:
    """Histogram of node op types in an ONNX file."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
