"""Which nodes int8 hurts most, measured where it matters: at the model's output, on real images.

"Quantize one node at a time" is the honest ranking (a node's own rounding can be loud yet harmless,
e.g. a linear bottleneck whose output is added to a much larger residual), but quantizing the model
once per node is slow. Instead the QDQ model is rewritten once into a *gated* model: every quantized
node n reads

    x + g[n] * (dequantize(quantize(x)) - x)        for each activation input x
    w + g[n] * (dequantize(w_int8) - w)             for its weights and bias (w: the float originals)

with g a vector input. g = 0 is the float model exactly, g = 1 the int8 model, and the one-hot g = e_n
quantizes node n alone. One session, one run per node and image: the output noise of each node alone.
Leaving n in float (deploykit.export.qdq_graph makes it read its inputs unrounded) removes exactly that
rounding.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from deploykit.core.devices import DEFAULT_THREADS
from deploykit.runtimes.onnxruntime import OrtModel

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
GATES = "deploykit_int8_gates"


@dataclass(frozen=True)
class QuantizedNode:
    name: str
    op_type: str
    reads: tuple[tuple[int, str, str], ...]  # (input slot, dequantized tensor, float source) per rounded input


@dataclass(frozen=True)
class NodeSensitivity:
    node: str
    op_type: str
    output_noise: float  # noise power / signal power of the model's output, with only this node in int8
    output_sqnr_db: float

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def quantized_nodes(qdq_model, float_model=None) -> list[QuantizedNode]:
    """Compute nodes of a QDQ graph that read dequantized tensors, with the float tensor each reading stands
    for: the same input slot of the node in the float model (given), else the QuantizeLinear's input."""
    producer = {out: node for node in qdq_model.graph.node for out in node.output}
    float_inputs = {} if float_model is None else {n.name: list(n.input) for n in float_model.graph.node}
    found = []
    for node in qdq_model.graph.node:
        if node.op_type in QDQ_OPS or not node.output:
            continue
        reads = []
        for slot, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is not None and dq.op_type == "DequantizeLinear":
                reads.append((slot, name, _float_source(dq, producer, float_inputs.get(node.name), slot)))
        if reads:
            found.append(QuantizedNode(node.name, node.op_type, tuple(reads)))
    return found


def _float_source(dq, producer: dict, float_inputs: list[str] | None, slot: int) -> str:
    """The float model's name for what a DequantizeLinear stands for ("" when unknown). Names, not the
    Q's input: where the quantizer absorbed a ReLU into a Q, that input is the conv's output before it."""
    if float_inputs and slot < len(float_inputs):
        return float_inputs[slot]
    q = producer.get(dq.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else ""


def node_sensitivity(float_path: Path, qdq_path: Path, batches: Iterable[np.ndarray], *,
                     threads: int = DEFAULT_THREADS) -> list[NodeSensitivity]:
    """Every quantized node of `qdq_path`, the most harmful (alone, at the output) first."""
    import onnx

    qdq, flt = onnx.load(str(qdq_path)), onnx.load(str(float_path))
    nodes = quantized_nodes(qdq, flt)
    batches = list(batches)
    with tempfile.TemporaryDirectory(prefix="deploykit-sensitivity-") as tmp:
        gated = OrtModel(gate(qdq, flt, nodes, Path(tmp) / "gated.onnx"), threads=threads)
        reference = [_run(gated, b, np.zeros(len(nodes), np.float32)) for b in batches]
        power = sum(float((r.astype(np.float64) ** 2).sum()) for r in reference)
        results = []
        for index, node in enumerate(nodes):
            gates = np.zeros(len(nodes), np.float32)
            gates[index] = 1.0
            noise = sum(float(((_run(gated, b, gates) - r) ** 2).sum()) for b, r in zip(batches, reference))
            ratio = noise / max(power, 1e-30)
            results.append(NodeSensitivity(node.name, node.op_type, ratio, _db(ratio)))
    return sorted(results, key=lambda s: s.output_noise, reverse=True)


def _run(model: OrtModel, batch: np.ndarray, gates: np.ndarray) -> np.ndarray:
    feeds = {model.input_name: np.ascontiguousarray(batch, dtype=np.float32), GATES: gates}
    return model.session.run(None, feeds)[0].astype(np.float64)


def gate(qdq, flt, nodes: list[QuantizedNode], out: Path) -> Path:
    """Write the gated twin of `qdq` (see the module docstring) to `out`. The float value of each gated input
    is found as `export.qdq_graph.FloatTensors` finds it (recomputing an absorbed activation)."""
    import onnx
    from onnx import TensorProto, helper

    from deploykit.export.qdq_graph import FloatTensors

    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    graph = model.graph
    graph.input.append(helper.make_tensor_value_info(GATES, TensorProto.FLOAT, [len(nodes)]))
    floats = FloatTensors(graph, flt.graph)
    before: dict[str, tuple] = {}  # node name -> (the ops inserted just before it, its rewired inputs)
    for index, node in enumerate(nodes):
        g = f"{GATES}_{index}"
        graph.initializer.append(helper.make_tensor(f"{g}_index", TensorProto.INT64, [], [index]))
        ops = [helper.make_node("Gather", [GATES, f"{g}_index"], [g], axis=0)]
        rewired = {}
        for slot, dequantized, name in node.reads:
            source = floats.get(name) if name else None
            if not source or source == dequantized:
                continue  # no float original known: this input stays rounded
            mixed = f"{g}_in{slot}"
            ops += floats.take_inserted() + [
                helper.make_node("Sub", [dequantized, source], [f"{mixed}_delta"]),
                helper.make_node("Mul", [f"{mixed}_delta", g], [f"{mixed}_scaled"]),
                helper.make_node("Add", [source, f"{mixed}_scaled"], [mixed])]
            rewired[slot] = mixed
        before[node.name] = (ops, rewired)
    ordered = []
    for node in graph.node:
        ops, rewired = before.get(node.name, ([], {}))
        for slot, name in rewired.items():
            node.input[slot] = name
        ordered += ops + [node]
    del graph.node[:]
    graph.node.extend(ordered)
    onnx.save(model, str(out))
    return out


def _db(ratio: float) -> float:
    return float("inf") if ratio <= 0 else -10.0 * float(np.log10(ratio))
