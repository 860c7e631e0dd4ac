"""OpenVINO on the CPU: a second host runtime for ONNX artifacts, and the one whose int8 kernels make a
QDQ model fast on x86.

Precision is explicit. At its defaults OpenVINO runs a float model in bf16 on CPUs that have it
(AVX-512 BF16, AMX): faster, but no longer the fp32 the artifact was checked in. We pass
INFERENCE_PRECISION_HINT (f32 unless asked otherwise), read back what the compiled model uses, and
count the precisions its execution graph actually ran the compute layers in: an int8 QDQ model
shows u8/i8 convolutions there, or it did not run in int8.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from deploykit.core.devices import DEFAULT_THREADS
from deploykit.core.errors import DeployKitError, import_backend

PRECISION_HINTS = ("f32", "bf16", "f16")
COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul", "Gemm")
INT8_TYPES = ("u8", "i8")


class OpenVINOModel:
    """An ONNX file compiled for OpenVINO's CPU plugin with explicit threads, latency mode and
    precision hint (None leaves OpenVINO's default for this CPU, which may be bf16)."""

    def __init__(self, path: Path, *, threads: int = DEFAULT_THREADS, precision: str | None = "f32") -> None:
        ov = import_backend("openvino", "openvino")
        if precision is not None and precision not in PRECISION_HINTS:
            raise DeployKitError(f"unknown OpenVINO precision hint {precision!r}",
                                 fix=f"one of {', '.join(PRECISION_HINTS)}")
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        try:
            self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses from C++
            raise DeployKitError(f"OpenVINO cannot compile {path}: {_reason(exc)}") from exc
        self.request = self.compiled.create_infer_request()
        self.version = ov.__version__
        self.requested_precision = precision

    def run(self, batch: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(result[self.compiled.output(0)])

    def precision_record(self) -> dict:
        """What OpenVINO ran: the hint as compiled, and the compute layers by runtime precision."""
        layers = executed_layers(self.compiled)
        return {"runtime": f"openvino {self.version}", "requested_hint": self.requested_precision,
                "inference_precision_hint": _type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT")),
                "compute_layers": layers, "summary": summarize(layers)}


def executed_layers(compiled) -> dict[str, dict[str, int]]:
    """{layer type: {runtime precision: count}} for the compute layers of the execution graph."""
    counts: dict[str, Counter] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else ""
        if layer in COMPUTE_LAYERS:
            precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
            counts.setdefault(layer, Counter())[precision] += 1
    return {layer: dict(c) for layer, c in sorted(counts.items())}


def summarize(layers: dict[str, dict[str, int]]) -> str:
    """'int8', 'f32', 'bf16', or e.g. 'mixed: 40 int8, 2 f32' over all compute layers."""
    totals: Counter = Counter()
    for by_precision in layers.values():
        for precision, n in by_precision.items():
            totals["int8" if precision in INT8_TYPES else precision] += n
    if len(totals) == 1:
        return next(iter(totals))
    return "mixed: " + ", ".join(f"{n} {p}" for p, n in totals.most_common()) if totals else "none"


def _type_name(value) -> str:
    """'f32' for OpenVINO's Type f32 (its str() is "<Type: 'float32'>")."""
    return value.to_string() if hasattr(value, "to_string") else str(value)


def _reason(exc: Exception) -> str:
    """OpenVINO's message without its stack of 'Exception from src/...' location lines."""
    lines = [line for line in str(exc).splitlines() if line.strip() and not line.startswith("Exception from ")]
    return " ".join(lines) if lines else type(exc).__name__
