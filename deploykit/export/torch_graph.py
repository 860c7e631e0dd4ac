"""What torch.export's graph says about a model that a converter refused: the op, and the layer calling it.

Converters built on torch.export (litert-torch, ExecuTorch) name the FX node or the ATen op they could not
handle; the layer comes from the module stack torch.export records on that node.
"""

from __future__ import annotations

import re

import torch

from deploykit.core.errors import DeployKitError


def unconvertible(model: torch.nn.Module, probe: torch.Tensor, exc: Exception, toolchain: str) -> DeployKitError:
    """The converter's failure as one message: the op, and the layer that calls it when it can be found."""
    text = str(exc)
    op = re.search(r"(?:Lowering not found: |Operator torch\._ops\.)(\S+)", text)  # LiteRT's, ExecuTorch's
    node = re.search(r"While executing %(\w+)", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    what = op.group(1) if op else lines[0][:200] if lines else type(exc).__name__
    layer = _layer_of(model, probe, node.group(1) if node else None, op.group(1) if op else None)
    where = f" in layer {layer!r}" if layer is not None else ""
    return DeployKitError(f"{toolchain} cannot convert the model: {what}{where}",
                          fix="replace that operation in the model (or export to ONNX); nothing was written")


def _layer_of(model: torch.nn.Module, probe: torch.Tensor, node_name: str | None, op: str | None) -> str | None:
    """The module path of the node that failed, from torch.export's module stack (None if not found)."""
    try:
        graph = torch.export.export(model, (probe,)).run_decompositions().graph
    except Exception:  # noqa: BLE001 - best effort: the op alone is still a useful message
        return None
    for node in graph.nodes:
        if node.op == "call_function" and (node.name == node_name or (op and str(node.target) == op)):
            return module_path(node)
    return None


def module_path(node) -> str:
    """The innermost module (dotted path, '' for the model itself) a torch.export node belongs to."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return re.sub(r"^L\['self'\]\.?", "", path).replace("._modules['", ".").replace("']", "")


def batch_norm_nodes(model: torch.nn.Module, probe: torch.Tensor) -> int:
    """Batch-norm ops in the (decomposed) torch.export program of `model`: what a converter is handed."""
    graph = torch.export.export(model, (probe,)).run_decompositions().graph
    return sum(1 for node in graph.nodes if node.op == "call_function" and "batch_norm" in str(node.target))
