"""Core ML on macOS: load an .mlpackage and predict. Core ML's runtime exists only on Apple
platforms; elsewhere coremltools converts and inspects packages but cannot run them."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from deploykit.core.errors import DeployKitError, import_backend


def is_macos() -> bool:
    return platform.system() == "Darwin"


def require_macos(what: str) -> None:
    if not is_macos():
        raise DeployKitError(f"{what} needs macOS: Core ML's runtime exists only on Apple platforms "
                             f"(this is {platform.system()})",
                             fix="run this on a Mac; here deploykit can convert and inspect .mlpackage files only")


class CoreMLModel:
    """An .mlpackage compiled for `compute_units` (all, cpu_and_ne, cpu_and_gpu, cpu_only)."""

    def __init__(self, path: Path, *, compute_units: str = "all") -> None:
        require_macos("running a Core ML model")
        ct = import_backend("coremltools", "coreml")
        try:
            self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units.upper()))
        except Exception as exc:  # noqa: BLE001 - Core ML compile errors come as several types
            raise DeployKitError(f"Core ML cannot load {path}: {exc}") from exc
        description = self.model.get_spec().description
        self.input_name, self.output_name = description.input[0].name, description.output[0].name
        self.version = ct.__version__

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a float NCHW batch (tensor-input packages)."""
        out = self.model.predict({self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.asarray(out[self.output_name], dtype=np.float32)

    def run_images(self, images: list) -> np.ndarray:
        """Logits for PIL images (image-input packages take one image per prediction)."""
        outs = [self.model.predict({self.input_name: image})[self.output_name] for image in images]
        return np.concatenate([np.asarray(o, dtype=np.float32).reshape(1, -1) for o in outs])
