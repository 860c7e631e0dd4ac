"""Edits of a quantized (QDQ) graph that need to know the float graph it came from: which tensor of the
quantized graph holds a float tensor's exact value, nodes reading their inputs unrounded, and model
outputs kept float. Pure ONNX: shared by the quantizer (`export.quantize`) and the sensitivity ranking
(`pipeline/targets/sensitivity.py`).
"""

from __future__ import annotations

from pathlib import Path


def read_float_inputs(path: Path, nodes: set[str], float_model: Path) -> None:
    """Make `nodes` read their activations unrounded, as they are in `float_model`.

    Leaving a node out of quantization can keep a Q/DQ pair on its input: one made for its producer (the
    ONNX Runtime layout quantizes op outputs) or shared with another reader. The node then reads the float
    value instead, so "left in float" removes exactly its own rounding. Tensors are matched through their
    producing node (names alone lie: where the quantizer absorbed a ReLU into a Q, the conv's output took
    the ReLU's name); an absorbed activation is copied back in front of the node. Q/DQ pairs nobody reads
    any more are dropped."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    floats = FloatTensors(graph, onnx.load(str(float_model)).graph)
    ordered = []
    for node in graph.node:
        if node.name in nodes and node.name in floats.inputs_of:
            for slot, wanted in enumerate(floats.inputs_of[node.name][:len(node.input)]):
                node.input[slot] = floats.get(wanted) or node.input[slot]
            ordered += floats.take_inserted()
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    _drop_unread(graph)
    onnx.save(model, str(path))


class FloatTensors:
    """Where the float graph's tensors are in the quantized graph, computed again where they were absorbed."""

    ACTIVATIONS = ("Relu", "Clip", "LeakyRelu")

    def __init__(self, graph, float_graph) -> None:
        self.graph = graph
        self.twins = {node.name: node for node in graph.node}
        self.producer = {out: (node, i) for node in float_graph.node for i, out in enumerate(node.output)}
        self.inputs_of = {node.name: list(node.input) for node in float_graph.node}
        self.constants = {init.name: init for init in float_graph.initializer}
        self.present = {init.name for init in graph.initializer} | {i.name for i in graph.input}
        self.produced = {out for node in graph.node for out in node.output}
        self.memo: dict[str, str | None] = {}
        self.inserted: list = []

    def get(self, name: str) -> str | None:
        """The quantized graph's tensor holding float `name` exactly (None: not provably available)."""
        if not name or name in self.present:
            return name
        if name not in self.memo:
            self.memo[name] = self._find(name)
        return self.memo[name]

    def _find(self, name: str) -> str | None:
        if name in self.constants:
            return self._add_constant(name)
        node, index = self.producer.get(name, (None, 0))
        twin = self.twins.get(node.name) if node is not None else None
        if twin is not None and twin.op_type == node.op_type:
            return twin.output[index]
        if node is None or node.op_type not in self.ACTIVATIONS:
            return None
        inputs = [self.get(x) for x in node.input]
        return None if any(x is None for x in inputs) else self._recompute(node, inputs)

    def _add_constant(self, name: str) -> str:
        """The float constant, under its own name unless the quantized graph gave that name to a DQ output
        (ONNX Runtime names a dequantized bias after the float one)."""
        import onnx

        constant = onnx.TensorProto()
        constant.CopyFrom(self.constants[name])
        if name in self.produced:
            constant.name = f"{name}_float"
        self.graph.initializer.append(constant)
        self.present.add(constant.name)
        return constant.name

    def _recompute(self, node, inputs: list[str]) -> str:
        import onnx

        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name, copy.input[:], copy.output[:] = f"{node.name}_float", inputs, [f"{node.output[0]}_float"]
        self.inserted.append(copy)
        return copy.output[0]

    def take_inserted(self) -> list:
        inserted, self.inserted = self.inserted, []
        return inserted


def keep_outputs_float(path: Path) -> None:
    """The model's outputs unrounded: a Q/DQ pair on a graph output (the ONNX Runtime layout puts one on
    the classifier's output) costs logits precision and saves nothing, and no "left in float" node could
    remove it. The pair is dropped and the tensor before it renamed to the output's name."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    changed = False
    for output in graph.output:
        dq = producer.get(output.name)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in {i.name for i in graph.input}:
            continue
        _rename(graph, q.input[0], output.name)
        graph.node.remove(dq)
        graph.node.remove(q)
        changed = True
    if changed:
        onnx.save(model, str(path))


def _rename(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def _drop_unread(graph) -> None:
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        unread = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                  and not read.intersection(n.output)]
        if not unread:
            return
        for node in unread:
            graph.node.remove(node)
