"""ONNX Runtime on the CPU: the reference host runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploykit.core.errors import DeployKitError, missing_extra


class OrtModel:
    """An ONNX file loaded in an ONNX Runtime session with an explicit thread count."""

    precision_used = "fp32"

    def __init__(self, path: Path, *, threads: int = 2) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing_extra("onnxruntime", "onnx") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initializers are noise for users
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises several private exception types
            raise DeployKitError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.version = ort.__version__

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
