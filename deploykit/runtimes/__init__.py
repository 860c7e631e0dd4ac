"""Runtimes by the name a device profile gives them: `load(path, device)` returns a runnable.

A runnable has `run(batch) -> logits` (NCHW float32 in), `precision_used` (what the runtime really runs:
"fp32", "int8 (QDQ)", OpenVINO's compiled precision...), `version`, and `static_batch` (the batch size the
artifact is fixed to, or None). Backends are imported inside the adapters, so importing this package is
cheap and a missing backend fails only when a device asks for it, naming the device and the reason.
"""

from __future__ import annotations

import functools
import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from deploykit.core.devices import DEFAULT_THREADS
from deploykit.core.errors import DeployKitError, install_hint

if TYPE_CHECKING:
    from deploykit.core.devices import Device


class Runnable(Protocol):
    precision_used: str
    version: str
    static_batch: int | None

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def load(path: Path, device: "Device") -> Runnable:
    """`path` loaded in `device`'s runtime with its threads, precision and compute units."""
    reason = unavailable(device.runtime)
    if reason:
        raise DeployKitError(f"device {device.name} cannot run here: {reason}",
                             fix=_FIXES.get(device.runtime, "profile it on a machine that has the runtime"))
    return _LOADERS[device.runtime](Path(path), device)


def unavailable(runtime: str) -> str | None:
    """Why `runtime` cannot run on this machine, or None when it can."""
    if runtime not in _LOADERS:
        raise DeployKitError(f"unknown runtime {runtime!r}", fix=f"known runtimes: {', '.join(names())}")
    return _CHECKS.get(runtime, lambda: None)()


def names() -> list[str]:
    return sorted(_LOADERS)


def onnx_input_shape(path: Path) -> list[int | None]:
    """The declared NCHW input shape of an ONNX file (None for a dynamic dimension), read from the graph
    without loading its weights: the graph itself is the truth about its batch and size."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def predictor(runnable: Runnable) -> Callable[[np.ndarray], np.ndarray]:
    """`runnable.run` for batches of any size: sliced to its static batch when it has one."""
    static = runnable.static_batch
    return fixed_batch(runnable.run, static) if static else runnable.run


def fixed_batch(run: Callable[[np.ndarray], np.ndarray], size: int) -> Callable[[np.ndarray], np.ndarray]:
    """Feed a graph with a static batch dimension: run slices of exactly `size`, padding the last one
    with zeros and dropping the padded rows' outputs."""

    def predict(batch: np.ndarray) -> np.ndarray:
        outputs = []
        for start in range(0, len(batch), size):
            chunk = batch[start:start + size]
            pad = size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            outputs.append(run(chunk)[:size - pad])
        return np.concatenate(outputs)

    return predict


class Adapted:
    """A backend's model behind the common interface; `precision_used` is read back on first access, after
    loading (so it does not count towards the load time)."""

    def __init__(self, model, version: str, static_batch: int | None, precision: Callable[[], str]) -> None:
        self.model, self.version, self.static_batch = model, version, static_batch
        self.run = model.run
        self._precision = precision

    @functools.cached_property
    def precision_used(self) -> str:
        return self._precision()


# --- adapters -------------------------------------------------------------------------------------

def _load_onnxruntime(path: Path, device: "Device") -> Runnable:
    from deploykit.runtimes.onnxruntime import OrtModel

    # 0 threads: ONNX Runtime's own default; spinning pool as deployed (latency.py times in blocks).
    model = OrtModel(path, threads=device.threads or 0)
    return Adapted(model, model.version, model.static_batch, lambda: _ort_precision(model, path))


def _ort_precision(model, path: Path) -> str:
    """"int8 (QDQ)" for a graph with QuantizeLinear nodes, "fp16" for float16 weights, else what ORT's
    optimized graph computes in ("fp32", or "mixed: ..." when a QDQ graph kept float kernels)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    ran = model.precision_record()["summary"] if hasattr(model, "precision_record") else "fp32"
    if any(node.op_type == "QuantizeLinear" for node in graph.node):
        return "int8 (QDQ)" if ran == "int8" else f"int8 (QDQ); ORT ran {ran}"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer):
        return "fp16"
    return ran


def _load_openvino(path: Path, device: "Device") -> Runnable:
    from deploykit.runtimes.openvino import OpenVINOModel

    if device.compute_units != "cpu":
        raise DeployKitError(f"device {device.name}: deploykit runs OpenVINO on the CPU only",
                             fix="set compute_units: cpu")
    hint = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}[device.precision]
    model = OpenVINOModel(path, threads=device.threads or 0, precision=hint)
    first = model.compiled.input(0).get_partial_shape()[0]
    return Adapted(model, model.version.split("-")[0], first.get_length() if first.is_static else None,
                   lambda: _openvino_precision(model))


def _openvino_precision(model) -> str:
    """What the compiled model's compute layers ran in, and the inference precision it was compiled with."""
    if isinstance(getattr(model, "precision_used", None), str):
        return model.precision_used
    record = model.precision_record()
    hint = re.sub(r"^<Type: '(\w+)'>$", r"\1", record["inference_precision_hint"])
    ran, compiled = _PRECISION_NAMES.get(record["summary"], record["summary"]), _PRECISION_NAMES.get(hint, hint)
    return ran if ran == compiled else f"{ran} (inference precision {compiled})"


_PRECISION_NAMES = {"f32": "fp32", "f16": "fp16", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def _load_coreml(path: Path, device: "Device") -> Runnable:
    from deploykit.runtimes.coreml import CoreMLModel

    model = CoreMLModel(path, compute_units=device.compute_units)
    return Adapted(model, model.version, None,
                   lambda: f"{_manifest_precision(path)} (as exported; {device.compute_units})")


def _load_tensorrt(path: Path, device: "Device") -> Runnable:
    from deploykit.core.tensorrt_plan import ENGINE_FILE
    from deploykit.runtimes.tensorrt import TensorRTModel

    model = TensorRTModel(path / ENGINE_FILE if path.is_dir() else path)
    return Adapted(model, model.version, int(next(iter(model.inputs.values())).shape[0]),
                   lambda: f"{_manifest_precision(path)} (as built)")


def _load_torch(path: Path, device: "Device") -> Runnable:
    from deploykit.runtimes.torch import TorchModel

    return TorchModel.from_file(path, threads=device.threads)


def _load_litert(path: Path, device: "Device") -> Runnable:
    from deploykit.runtimes.litert import LiteRTModel

    model = LiteRTModel(path, threads=device.threads or DEFAULT_THREADS)  # XNNPACK needs a count
    return Adapted(model, model.version, model.static_batch, lambda: model.precision_used)


def _load_executorch(path: Path, device: "Device") -> Runnable:
    from deploykit.runtimes.executorch import ExecuTorchModel

    model = ExecuTorchModel(path, threads=device.threads)
    return Adapted(model, model.version, model.static_batch, lambda: model.precision_used)


def _manifest_precision(path: Path) -> str:
    from deploykit.core.manifest import Manifest, manifest_path

    manifest = manifest_path(path)
    return Manifest.read(manifest).precision if manifest.is_file() else "unknown"


def _missing(module: str, extra: str | None) -> Callable[[], str | None]:
    def check() -> str | None:
        import importlib.util

        found = importlib.util.find_spec(module) is not None
        return None if found else f"{module} is not installed ({install_hint(module, extra)})"
    return check


def _coreml_unavailable() -> str | None:
    if platform.system() != "Darwin":
        return f"Core ML's runtime exists only on Apple platforms (this is {platform.system()})"
    return _missing("coremltools", "coreml")()


def _tensorrt_unavailable() -> str | None:
    from deploykit.runtimes.tensorrt import engine_unavailable

    return engine_unavailable()


_LOADERS: dict[str, Callable[[Path, "Device"], Runnable]] = {
    "onnxruntime": _load_onnxruntime,
    "openvino": _load_openvino,
    "coreml": _load_coreml,
    "tensorrt": _load_tensorrt,
    "torch": _load_torch,
    "litert": _load_litert,
    "executorch": _load_executorch,
}
_CHECKS: dict[str, Callable[[], str | None]] = {
    "onnxruntime": _missing("onnxruntime", None),  # a dependency of deploykit itself
    "openvino": _missing("openvino", "openvino"),
    "coreml": _coreml_unavailable,
    "tensorrt": _tensorrt_unavailable,
    "litert": _missing("ai_edge_litert", "litert"),
    "executorch": _missing("executorch", "executorch"),
}
_FIXES = {
    "coreml": "profile Core ML devices on a Mac, or through the device's agent",
    "tensorrt": 'profile TensorRT devices on the machine with the NVIDIA GPU (pip install "deploykit[tensorrt]")',
    "openvino": 'pip install "deploykit[openvino]"',
    "litert": 'pip install "deploykit[litert]"',
    "executorch": 'pip install "deploykit[executorch]"',
}
