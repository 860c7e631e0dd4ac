"""ONNX Runtime's static quantizer behind one adapter: float ONNX + calibration batches -> int8 QDQ ONNX
in a runtime's layout (`export.qdq_layout`). With `export.calibrate`, the only modules that import
`onnxruntime.quantization`.

The format is explicit quantization (QuantizeLinear/DequantizeLinear pairs), which ONNX Runtime, OpenVINO
and TensorRT all consume; where the pairs go and in which type is the layout's. Every calibration method's
ranges come from one pass over the images (`export.calibrate`) and are cached per model and images, so
the candidates (method, per-channel or per-tensor weights, layers left in float) only re-run the quantizer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from deploykit.core.errors import DeployKitError
from deploykit.export.calibrate import quiet as _quiet
from deploykit.export.qdq_layout import LAYOUTS, QdqLayout

METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class QuantizeConfig:
    """One int8 candidate."""

    method: str = "minmax"
    per_channel: bool = True
    exclude: tuple[str, ...] = ()  # ONNX node names left in float

    def label(self) -> str:
        weights = "per-channel" if self.per_channel else "per-tensor"
        kept = f", {len(self.exclude)} layers float" if self.exclude else ""
        return f"{self.method} / {weights}{kept}"


def prepare_for_quantization(float_path: Path, out: Path) -> Path:
    """ORT's recommended pre-processing (shape inference, basic graph optimization): the quantizer
    needs the shapes to quantize every tensor."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _quiet():
        try:
            quant_pre_process(str(float_path), str(out), skip_symbolic_shape=True)
        except Exception as exc:  # noqa: BLE001 - ORT raises assorted types from its optimizer
            raise DeployKitError(f"ONNX Runtime could not prepare the model for quantization: {exc}",
                                 fix="export without int8, and report this model") from exc
    return out


class Int8Quantizer:
    """Quantizes one (prepared) float model in as many configurations as asked, in one layout. `batches`
    are the range-setting inputs, already preprocessed; ranges are collected on first use, for every
    method in `methods` at once."""

    def __init__(self, prepared: Path, batches: Iterable[np.ndarray], *, workdir: Path,
                 layout: QdqLayout = LAYOUTS["onnxruntime"], methods: tuple[str, ...] = METHODS,
                 input_name: str = "input") -> None:
        self.prepared, self.workdir, self.layout = Path(prepared), Path(workdir), layout
        self.input_name, self.methods = input_name, tuple(methods)
        self.batches = list(batches)
        if not self.batches:
            raise DeployKitError("no calibration batches to quantize with",
                                 fix="give more images with --calib, or export with a smaller --batch")
        self.key = _ranges_key(self.prepared, self.batches)

    def quantize(self, config: QuantizeConfig, out: Path) -> Path:
        from onnxruntime.quantization import QuantFormat, quantize_static

        if config.method not in METHODS:
            raise DeployKitError(f"unknown calibration method {config.method!r}", fix=f"one of {', '.join(METHODS)}")
        arguments = self.layout.quantizer_arguments(self.sign_ranges())
        with _quiet():
            try:
                quantize_static(
                    str(self.prepared), str(out), None, quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
                    nodes_to_exclude=list(config.exclude), calibrate_method=_method(config.method),
                    calibration_cache_path=str(self.ranges_file(config.method)), **arguments)
            except Exception as exc:  # noqa: BLE001 - the quantizer raises bare ValueErrors/asserts
                raise DeployKitError(f"ONNX Runtime's quantizer failed ({config.label()}): {exc}",
                                     fix="try another --calib-method or --per-channel, and report this model") from exc
        if config.exclude:
            read_float_inputs(out, set(config.exclude), self.prepared)
        keep_outputs_float(out)
        return out

    def sign_ranges(self):
        """The minmax ranges, which say where tensors are never negative (None if the layout does not ask)."""
        if not self.layout.unsigned_when_non_negative:
            return None
        from onnxruntime.quantization.calibrate import load_tensors_data

        return load_tensors_data(self.ranges_file("minmax"))

    def ranges_file(self, method: str) -> Path:
        """The cached ranges of `method`; the first call collects every method's in one pass."""
        path = self.workdir / f"ranges-{method}-{self.key}.json"
        if not path.is_file():
            from deploykit.export.calibrate import collect_ranges, save_ranges

            methods = tuple(dict.fromkeys((*self.methods, method, "minmax")))
            ranges = collect_ranges(self.prepared, self.batches, workdir=self.workdir,
                                    input_name=self.input_name, methods=methods)
            for name, data in ranges.items():
                save_ranges(data, self.workdir / f"ranges-{name}-{self.key}.json")
        return path


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
    floats = _FloatTensors(graph, onnx.load(str(float_model)).graph)
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


class _FloatTensors:
    """Where the float graph's tensors are in the quantized graph, computed again where they were absorbed."""

    ACTIVATIONS = ("Relu", "Clip", "LeakyRelu")

    def __init__(self, graph, float_graph) -> None:
        self.graph = graph
        self.twins = {node.name: node for node in graph.node}
        self.producer = {out: (node, i) for node in float_graph.node for i, out in enumerate(node.output)}
        self.inputs_of = {node.name: list(node.input) for node in float_graph.node}
        self.constants = {init.name: init for init in float_graph.initializer}
        self.present = {init.name for init in graph.initializer} | {i.name for i in graph.input}
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
            self.graph.initializer.append(self.constants[name])
            self.present.add(name)
            return name
        node, index = self.producer.get(name, (None, 0))
        twin = self.twins.get(node.name) if node is not None else None
        if twin is not None and twin.op_type == node.op_type:
            return twin.output[index]
        if node is None or node.op_type not in self.ACTIVATIONS:
            return None
        inputs = [self.get(x) for x in node.input]
        return None if any(x is None for x in inputs) else self._recompute(node, inputs)

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


def _ranges_key(model: Path, batches: list[np.ndarray]) -> str:
    """Full sha256 of the model file and the calibration inputs: cached ranges belong to both."""
    digest = hashlib.sha256(model.read_bytes())
    for batch in batches:
        digest.update(np.ascontiguousarray(batch).tobytes())
    return digest.hexdigest()


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]
