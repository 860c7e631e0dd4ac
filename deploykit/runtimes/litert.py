"""LiteRT (TensorFlow Lite) on the CPU with the XNNPACK delegate: the runtime Android phones run `.tflite`
files in, and the same XNNPACK kernels on this x86 machine.

ai-edge-litert's interpreter applies XNNPACK by default (the "default delegate"); `threads` is explicit.
What ran is read back from the file itself (the compute ops and the type of their inputs: an int8 model
has INT8 convs) and from the interpreter (how many partitions XNNPACK took over).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from deploykit.core.devices import DEFAULT_THREADS
from deploykit.core.errors import DeployKitError, import_backend
from deploykit.core.manifest import tool_versions

COMPUTE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL")


class LiteRTModel:
    """A `.tflite` file in LiteRT's interpreter with `threads` threads and the XNNPACK delegate."""

    def __init__(self, path: Path, *, threads: int = DEFAULT_THREADS) -> None:
        interpreter_class = import_backend("ai_edge_litert.interpreter", "litert", package="ai-edge-litert").Interpreter
        self.path, self.threads = Path(path), threads
        try:
            self.interpreter = interpreter_class(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise DeployKitError(f"LiteRT cannot load {path}: {exc}",
                                 fix="pass a .tflite file written by `deploykit export --target litert`") from exc
        self.input, self.output = self.interpreter.get_input_details()[0], self.interpreter.get_output_details()[0]
        self.static_batch = int(self.input["shape"][0])
        self.version = tool_versions(("ai-edge-litert",)).get("ai-edge-litert", "unknown")

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], _to_input(np.asarray(batch, np.float32), self.input))
        self.interpreter.invoke()
        return _from_output(self.interpreter.get_tensor(self.output["index"]), self.output)

    def precision_record(self) -> dict:
        """The compute ops by input type (from the flatbuffer) and the XNNPACK partitions (from the interpreter)."""
        all_ops = typed_op_counts(self.path)
        typed = {op: by_type for op, by_type in all_ops.items() if op in COMPUTE_OPS}
        fp16_weights = all_ops.get("DEQUANTIZE", {}).get("FLOAT16", 0)  # TFLite's float16 quantization
        delegated = Counter(node["op_name"] for node in self.interpreter._get_ops_details())["DELEGATE"]
        summary = summarize(typed) + (f" compute, {fp16_weights} fp16 weight tensors" if fp16_weights else "")
        return {"runtime": f"litert {self.version}", "threads": self.threads, "compute_ops": typed,
                "io": f"{np.dtype(self.input['dtype']).name} in, {np.dtype(self.output['dtype']).name} out",
                "fp16_weight_tensors": fp16_weights, "xnnpack_partitions": delegated, "summary": summary}

    @property
    def precision_used(self) -> str:
        record = self.precision_record()
        partitions = record["xnnpack_partitions"]
        return f"{record['summary']} (XNNPACK, {partitions} partition{'s' * (partitions != 1)})"


def _to_input(batch: np.ndarray, detail: dict) -> np.ndarray:
    """Float pixels as the model's input: as they are, or quantized with the input's own scale and zero
    point (LiteRT's static int8 conversion makes the interface int8, as a full-integer phone model is)."""
    if detail["dtype"] == np.float32:
        return np.ascontiguousarray(batch)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(batch / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _from_output(values: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return values.copy()
    scale, zero = detail["quantization"]
    return ((values.astype(np.float32) - zero) * scale).astype(np.float32)


def summarize(typed: dict[str, dict[str, int]]) -> str:
    """'int8', 'fp32', or 'mixed: 40 int8, 2 fp32' over the compute ops' input types (OpenVINO's summary),
    for LiteRT's tensor types and XNNPACK's datatypes (a `.pte`'s delegate) alike."""
    from deploykit.runtimes.openvino import summarize as summarize_layers

    names = {"INT8": "i8", "UINT8": "u8", "FLOAT32": "fp32", "FLOAT16": "fp16",  # LiteRT's tensor types
             "qint8": "i8", "qcint8": "i8", "quint8": "u8", "fp32": "fp32", "fp16": "fp16"}  # XNNPACK's
    return summarize_layers({op: {names.get(t, t.lower()): n for t, n in by_type.items()}
                             for op, by_type in typed.items()})


def typed_op_counts(path: Path) -> dict[str, dict[str, int]]:
    """{builtin op: {type of its first input: count}} over the main subgraph of a `.tflite` file (read from
    its flatbuffer with the runtime's own schema: what the file holds, for the export's structure check and
    the runtime's precision record)."""
    from ai_edge_litert import schema_py_generated as schema

    buffer = Path(path).read_bytes()
    try:
        model = schema.Model.GetRootAsModel(buffer, 0)
        graph = model.Subgraphs(0)
    except Exception as exc:  # noqa: BLE001 - a damaged flatbuffer raises from struct unpacking
        raise DeployKitError(f"{path} is not a LiteRT model: {exc}", fix="pass a .tflite file") from exc
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    counts: dict[str, Counter] = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        first = op.Inputs(0) if op.InputsLength() else -1
        tensor_type = type_names.get(graph.Tensors(first).Type(), "?") if first >= 0 else "none"
        counts.setdefault(name, Counter())[tensor_type] += 1
    return {op: dict(c) for op, c in sorted(counts.items())}


def op_counts(path: Path) -> dict[str, int]:
    return {op: sum(by_type.values()) for op, by_type in typed_op_counts(path).items()}
