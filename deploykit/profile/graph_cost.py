"""The cost model (`deploykit.profile.count_cost`) applied to an ONNX graph instead of a torch module.

What ships may differ from the zoo's deploy form (pruned channels, another input size), so an artifact's
params, MACs and memory access are read from its own graph: the weights of its Conv / Gemm / MatMul nodes
(followed through DequantizeLinear in int8 QDQ graphs) and the shapes ONNX shape inference gives. The
formulas are cost.py's own `layer_cost`, called with shape-only (meta) modules, so there is one copy of
the math. Figures are per image: a static batch-N graph's shapes are taken at batch 1.
"""

from __future__ import annotations

import math
from pathlib import Path

from torch import nn

from deploykit.core.errors import DeployKitError
from deploykit.profile.cost import CostReport, LayerCost, layer_cost

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def onnx_cost(path: Path) -> CostReport:
    """Params, MACs and memory-access cost of the ONNX file at `path`, per image."""
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    except Exception as exc:  # noqa: BLE001 - onnx raises several error types for bad files
        raise DeployKitError(f"cannot read the ONNX graph {path}: {exc}") from exc
    graph = model.graph
    weights = _weights(graph)
    shapes = _shapes(graph)
    layers = [cost for node in graph.node if (cost := _node_cost(node, weights, shapes)) is not None]
    first = shapes.get(graph.input[0].name, ()) if graph.input else ()
    return CostReport(input_shape=tuple(_per_image(first)), params=sum(layer.params for layer in layers),
                      macs=sum(layer.macs for layer in layers),
                      memory_access=sum(layer.memory_access for layer in layers), layers=tuple(layers))


def _weights(graph) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape for initializers and Constant outputs, and for DequantizeLinear outputs of them."""
    dims = {t.name: tuple(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                dims[node.output[0]] = tuple(value.dims)
    for node in graph.node:  # a QDQ graph stores int8 weights and dequantizes them in the graph
        if node.op_type == "DequantizeLinear" and node.input[0] in dims:
            dims[node.output[0]] = dims[node.input[0]]
    return dims


def _shapes(graph) -> dict[str, tuple]:
    shapes = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return shapes


def _node_cost(node, weights: dict, shapes: dict) -> LayerCost | None:
    if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights:
        return _conv(node, weights, shapes)
    if node.op_type in ("Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in weights:
        return _linear(node, weights, shapes)
    return None


def _conv(node, weights: dict, shapes: dict) -> LayerCost | None:
    weight = weights[node.input[1]]
    groups = _attribute(node, "group", 1)
    in_shape, out_shape = _per_image(shapes.get(node.input[0])), _per_image(shapes.get(node.output[0]))
    if None in in_shape + out_shape or len(weight) - 2 not in _CONVS:
        return None
    conv = _CONVS[len(weight) - 2](weight[1] * groups, weight[0], tuple(weight[2:]), groups=groups, bias=False,
                                   device="meta")
    return layer_cost(node.name or node.output[0], conv, in_shape, out_shape, _params(node, weights))


def _linear(node, weights: dict, shapes: dict) -> LayerCost | None:
    weight = weights[node.input[1]]
    if len(weight) != 2:
        return None
    transposed = node.op_type == "Gemm" and _attribute(node, "transB", 0) == 1
    out_features, in_features = weight if transposed else weight[::-1]
    in_shape, out_shape = _per_image(shapes.get(node.input[0])), _per_image(shapes.get(node.output[0]))
    if None in in_shape + out_shape:
        return None
    linear = nn.Linear(in_features, out_features, bias=False, device="meta")
    return layer_cost(node.name or node.output[0], linear, in_shape, out_shape, _params(node, weights))


def _params(node, weights: dict) -> int:
    """Elements of the node's weight and bias (a bias is input 2 of Conv and Gemm)."""
    return sum(math.prod(weights[name]) for name in node.input[1:3] if name in weights)


def _per_image(shape: tuple | None) -> tuple:
    if not shape:
        return (None,)
    return (1, *shape[1:])


def _attribute(node, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)
