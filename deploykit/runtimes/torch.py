"""PyTorch on the CPU: the float original (the training form) as a runnable, and `.pt2` files saved
with `torch.export.save`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deploykit.core.errors import DeployKitError


class TorchModel:
    """A module in eval mode run under inference mode with an explicit thread count.

    torch's thread count is process-wide; it is set on every run so that another runnable in the same
    process cannot leave it changed."""

    static_batch = None

    def __init__(self, module: torch.nn.Module, *, threads: int | None = None) -> None:
        self.module = module.eval()
        self.threads = threads
        self.version = torch.__version__
        dtype = next((p.dtype for p in module.parameters()), torch.float32)
        self.precision_used = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(
            dtype, str(dtype))

    @classmethod
    def from_file(cls, path: Path, *, threads: int | None = None) -> "TorchModel":
        if Path(path).suffix != ".pt2":
            raise DeployKitError(f"the torch runtime loads torch.export programs (.pt2), not {Path(path).name}",
                                 fix="save the model with torch.export.save, or choose a device with another runtime")
        return cls(torch.export.load(str(path)).module(), threads=threads)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            return self.module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()
