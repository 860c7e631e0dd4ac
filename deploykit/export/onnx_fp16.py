"""An fp32 ONNX graph rewritten to compute in fp16, with fp32 inputs and outputs, and chosen layers
left in fp32.

TensorRT takes precision from the graph's types in strongly typed mode, which TensorRT 10.12+
recommends and TensorRT 11 requires (its --fp16 builder flag is gone): an fp16 engine needs an fp16
graph. Layers whose activations leave the fp16 range (export.fp16_range) stay fp32, with everything
that reads their large outputs, as in the Core ML fp16 guard; casts go where the two meet.
"""

from __future__ import annotations

import copy

import numpy as np

from deploykit.core.errors import DeployKitError
from deploykit.export.fp16_range import FP16_MAX

# Inputs whose type the ONNX spec fixes to float32 whatever the data type: they keep fp32.
_FIXED_FLOAT_INPUTS = {"Resize": {2}, "Upsample": {1}}
_WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def convert_to_fp16(model, *, keep_fp32: dict[str, bool] | None = None):
    """(copy of `model` computing in fp16, names of the nodes kept in fp32). `keep_fp32` maps torch
    layer names to whether their output is large; their nodes are found by weight name."""
    import onnx

    model = copy.deepcopy(model)
    graph = model.graph
    for i, node in enumerate(graph.node):
        node.name = node.name or f"node_{i}"  # nodes are tracked by name
    floats = _float_tensors(model)
    fp32_nodes = _fp32_nodes(graph, keep_fp32 or {})
    dtype = _convert_initializers(graph, fp32_nodes, floats)
    floats |= _rename_fp16_outputs(graph, fp32_nodes, floats)
    nodes = []
    for node in graph.node:
        precision = onnx.TensorProto.FLOAT if node.name in fp32_nodes else onnx.TensorProto.FLOAT16
        nodes += _casts_for(node, precision, floats, dtype)
        if precision == onnx.TensorProto.FLOAT16:
            _convert_node(node)
        dtype.update({out: precision for out in node.output if out in floats})
        nodes.append(node)
    nodes += _output_casts(graph, dtype)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale fp32 annotations; the checker re-infers every type
    onnx.checker.check_model(model, full_check=True)
    return model, sorted(fp32_nodes)


def _float_tensors(model) -> set[str]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model).graph
    values = list(inferred.value_info) + list(inferred.input) + list(inferred.output)
    names = {v.name for v in values if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    return names | {t.name for t in inferred.initializer if t.data_type == onnx.TensorProto.FLOAT}


def _fp32_nodes(graph, keep: dict[str, bool]) -> set[str]:
    """Weighted nodes of kept layers, and every node reading a tensor made large (in graph order)."""
    weights = {f"{layer}.weight": large for layer, large in keep.items()}
    fp32, large = set(), set()
    for node in graph.node:
        if node.op_type in _WEIGHTED and len(node.input) > 1 and node.input[1] in weights:
            fp32.add(node.name)
            if weights[node.input[1]]:
                large.update(node.output)
        elif node.op_type not in _WEIGHTED and large.intersection(node.input):
            fp32.add(node.name)
            large.update(node.output)
    found = {w for n in graph.node if n.name in fp32 and n.op_type in _WEIGHTED for w in n.input[1:2]}
    if set(weights) - found:
        missing = sorted(set(weights) - found)
        raise DeployKitError(f"fp16: layers {missing} to keep in fp32 are not in the ONNX graph",
                             fix="use --precision fp32, and report this model")
    return fp32


def _convert_initializers(graph, fp32_nodes: set[str], floats: set[str]) -> dict[str, int]:
    """Initializers read by an fp16 node become fp16; the tensor -> dtype map starts from them."""
    import onnx

    fixed = {n.input[i] for n in graph.node for i in _FIXED_FLOAT_INPUTS.get(n.op_type, ()) if i < len(n.input)}
    fp16_readers = {name for n in graph.node if n.name not in fp32_nodes for name in n.input}
    dtype = {v.name: onnx.TensorProto.FLOAT for v in graph.input if v.name in floats}
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        if init.name in fp16_readers and init.name not in fixed:
            init.CopyFrom(_half_tensor(init))
        dtype[init.name] = init.data_type
    return dtype


def _half_tensor(tensor):
    from onnx import numpy_helper

    values = numpy_helper.to_array(tensor)
    peak = float(np.abs(values).max()) if values.size else 0.0
    if peak > FP16_MAX:
        raise DeployKitError(f"weight {tensor.name} holds {peak:.3g}, beyond the fp16 range",
                             fix="use --precision fp32")
    return numpy_helper.from_array(values.astype(np.float16), tensor.name)


def _convert_node(node) -> None:
    import onnx

    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == onnx.TensorProto.FLOAT:
            attr.t.CopyFrom(_half_tensor(attr.t))  # Constant nodes and ConstantOfShape values
        elif node.op_type == "Cast" and attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
            attr.i = onnx.TensorProto.FLOAT16


def _casts_for(node, precision: int, floats: set[str], dtype: dict[str, int]) -> list:
    """Cast nodes feeding `node` its float inputs in `precision`; rewires its inputs to them."""
    import onnx

    casts = []
    fixed = _FIXED_FLOAT_INPUTS.get(node.op_type, ())
    for i, name in enumerate(node.input):
        if name not in floats or i in fixed or dtype.get(name, precision) == precision:
            continue
        suffix = "fp16" if precision == onnx.TensorProto.FLOAT16 else "fp32"
        cast_name = f"{name}_as_{suffix}"
        if cast_name not in dtype:
            casts.append(onnx.helper.make_node("Cast", [name], [cast_name], to=precision,
                                               name=f"{name}_to_{suffix}"))
            dtype[cast_name] = precision
        node.input[i] = cast_name
    return casts


def _rename_fp16_outputs(graph, fp32_nodes: set[str], floats: set[str]) -> set[str]:
    """Graph outputs made by fp16 nodes get an fp16 name (returned); `_output_casts` restores the fp32 one."""
    outputs = {v.name for v in graph.output if v.name in floats}
    renamed = {out: f"{out}_fp16" for n in graph.node if n.name not in fp32_nodes for out in n.output
               if out in outputs}
    for node in graph.node:
        node.input[:] = [renamed.get(x, x) for x in node.input]
        node.output[:] = [renamed.get(x, x) for x in node.output]
    return set(renamed.values())


def _output_casts(graph, dtype: dict[str, int]) -> list:
    import onnx

    return [onnx.helper.make_node("Cast", [f"{v.name}_fp16"], [v.name], to=onnx.TensorProto.FLOAT,
                                  name=f"{v.name}_to_fp32")
            for v in graph.output if f"{v.name}_fp16" in dtype]
