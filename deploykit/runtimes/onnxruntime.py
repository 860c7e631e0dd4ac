"""ONNX Runtime on the CPU: the reference host runtime."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from deploykit.core.devices import DEFAULT_THREADS
from deploykit.core.errors import DeployKitError, import_backend

INT8_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "QLinearAdd",
            "QLinearGlobalAveragePool", "QLinearMul", "QLinearConcat", "QLinearAveragePool")
FLOAT_COMPUTE_OPS = ("Conv", "FusedConv", "Gemm", "MatMul", "FusedMatMul", "NhwcFusedConv")


class OrtModel:
    """An ONNX file loaded in an ONNX Runtime session with an explicit thread count. `optimize=False`
    runs the graph as written (a QDQ model then computes in float between Q/DQ pairs: the numerics of
    the quantized model without ORT's int8 kernels)."""

    precision_used = "fp32"

    def __init__(self, path: Path, *, threads: int = DEFAULT_THREADS, optimize: bool = True, spinning: bool = True) -> None:
        ort = import_backend("onnxruntime", None)  # a dependency of deploykit itself: no extra brings it
        self.path, self.threads = Path(path), threads
        options = _options(ort, threads, optimize)
        if not spinning:  # idle pool threads sleep: models timed side by side do not steal each other's cores
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises several private exception types
            raise DeployKitError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = list(self.session.get_inputs()[0].shape)  # ints, or names for dynamic dims
        self.static_batch = self.input_shape[0] if isinstance(self.input_shape[0], int) else None
        self.version = ort.__version__

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def run_named(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every graph output by name (for graphs with intermediate tensors added as outputs)."""
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return dict(zip(names, values))

    def precision_record(self) -> dict:
        """What ONNX Runtime ran: the compute ops of its optimized graph, int8 kernels vs float ones."""
        import onnx
        import onnxruntime as ort

        with tempfile.TemporaryDirectory(prefix="deploykit-ort-") as tmp:
            options = _options(ort, self.threads, True)
            options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            ops = Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
        int8 = {op: n for op, n in sorted(ops.items()) if op in INT8_OPS}
        flt = {op: n for op, n in sorted(ops.items()) if op in FLOAT_COMPUTE_OPS}
        summary = "int8" if int8 and not flt else "fp32" if flt and not int8 else \
            f"mixed: {sum(int8.values())} int8, {sum(flt.values())} fp32"
        return {"runtime": f"onnxruntime {self.version}", "int8_ops": int8, "float_ops": flt, "summary": summary}


def _options(ort, threads: int, optimize: bool):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers are noise for users
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options
