"""TensorRT on an NVIDIA GPU: deserialize an engine and run it with the name-based tensor API
(set_tensor_address + execute_async_v3). Device buffers are torch CUDA tensors, so no extra CUDA
binding is needed beyond a CUDA build of torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploykit.core.errors import DeployKitError
from deploykit.export.tensorrt import engine_unavailable, import_tensorrt


class TensorRTModel:
    """A serialized engine with its I/O buffers bound once; `run` copies in, executes, copies out."""

    def __init__(self, engine_path: Path) -> None:
        reason = engine_unavailable()
        if reason:
            raise DeployKitError(f"cannot run a TensorRT engine here: {reason}",
                                 fix='run on the machine with the GPU that built it, '
                                     'with pip install "deploykit[tensorrt]"')
        trt = import_tensorrt()
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
