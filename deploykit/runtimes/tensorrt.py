"""TensorRT on an NVIDIA GPU, the only module that imports it: build an engine from a bundle's plan
(`core/tensorrt_plan.py`), deserialize it and run it with the name-based tensor API (set_tensor_address +
execute_async_v3). Device buffers are torch CUDA tensors, so no extra CUDA binding is needed beyond a CUDA
build of torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploykit.core.errors import DeployKitError, import_backend
from deploykit.core.tensorrt_plan import BuildPlan


class TensorRTModel:
    """A serialized engine with its I/O buffers bound once; `run` copies in, executes, copies out."""

    def __init__(self, engine_path: Path) -> None:
        reason = engine_unavailable()
        if reason:
            raise DeployKitError(f"cannot run a TensorRT engine here: {reason}",
                                 fix='run on the machine with the GPU that built it, '
                                     'with pip install "deploykit[tensorrt]"')
        trt = import_backend("tensorrt", "tensorrt")
        self.version = trt.__version__
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise DeployKitError(f"TensorRT cannot load {engine_path}",
                                 fix="engines load only with the TensorRT version and GPU model that built "
                                     "them; rebuild it")
        self.context = self.engine.create_execution_context()
        self.inputs, self.outputs = self._bind(trt)

    def _bind(self, trt) -> tuple[dict, dict]:
        import torch

        inputs, outputs = {}, {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            buffer = torch.empty(tuple(self.engine.get_tensor_shape(name)), dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, buffer.data_ptr())
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs)[name] = buffer
        return inputs, outputs

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        (buffer,) = self.inputs.values()
        buffer.copy_(torch.from_numpy(np.ascontiguousarray(batch)).to(buffer.dtype))
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise DeployKitError("TensorRT execution failed (see its log above)")
        stream.synchronize()
        return next(iter(self.outputs.values())).float().cpu().numpy()


def engine_unavailable() -> str | None:
    """Why no engine can be built on this machine, or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (and torch, which deploykit uses for device buffers, needs a CUDA build)"
    return None


def build_engine(directory: Path, plan: BuildPlan) -> str:
    """Build `plan.engine` from `plan.onnx` in `directory`, reusing and updating its timing cache.
    Returns the TensorRT version."""
    trt = import_backend("tensorrt", "tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(directory / plan.onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DeployKitError(f"TensorRT cannot parse {plan.onnx}: {errors}", fix="report this model")
    config = _builder_config(trt, builder, plan, directory / plan.timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DeployKitError("TensorRT could not build an engine (see its log above)",
                             fix="try a larger --workspace, or report this model")
    (directory / plan.engine).write_bytes(bytes(serialized))
    (directory / plan.timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return trt.__version__


def _builder_config(trt, builder, plan: BuildPlan, cache_path: Path):
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_mib << 20)
    if plan.precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return config
