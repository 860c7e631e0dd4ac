"""ONNX -> TensorRT engine, or the plan to build it elsewhere. The only module that calls the
TensorRT builder.

Engines are specific to the GPU model and the TensorRT version, so the portable artifact is the
ONNX plus a plan; the engine is built where it runs. Networks are strongly typed: the precision is
in the ONNX types (an fp16 graph, or int8 Q/DQ nodes), which TensorRT 10 supports and TensorRT 11
requires (its --fp16/--int8 builder flags are gone).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from deploykit.core.errors import DeployKitError, missing_extra

ONNX_FILE, PLAN_FILE, ENGINE_FILE, CACHE_FILE = "model.onnx", "plan.json", "model.engine", "timing.cache"
DEFAULT_WORKSPACE_MIB = 1024
PLAN_FORMAT = "deploykit-tensorrt-plan/1"


@dataclass(frozen=True)
class BuildPlan:
    """Everything needed to build the engine on the target machine, as data."""

    precision: str  # fp32 | fp16 | int8: carried by the ONNX types
    workspace_mib: int
    onnx_sha256: str
    input: dict  # {"name", "shape", "dtype"}
    output: dict
    onnx: str = ONNX_FILE
    engine: str = ENGINE_FILE
    timing_cache: str = CACHE_FILE
    format: str = PLAN_FORMAT

    def trtexec(self) -> list[str]:
        """The equivalent trtexec command, run inside the artifact directory. No --shapes: the ONNX
        has static shapes, and trtexec takes shape flags only for dynamic inputs."""
        command = ["trtexec", f"--onnx={self.onnx}", f"--saveEngine={self.engine}", "--stronglyTyped",
                   f"--memPoolSize=workspace:{self.workspace_mib}M", f"--timingCacheFile={self.timing_cache}"]
        if self.precision == "fp32":
            command.append("--noTF32")  # TF32 keeps 10 mantissa bits: fp32 would not be fp32
        return command

    def to_dict(self) -> dict:
        return {**asdict(self), "network": "strongly typed (precision from the ONNX types)",
                "trtexec": " ".join(self.trtexec()), "requires": "TensorRT >= 10 and the target NVIDIA GPU; "
                "an engine runs only on the GPU model and TensorRT version that built it"}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> "BuildPlan":
        data = json.loads(Path(path).read_text())
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise missing_extra("tensorrt", "tensorrt") from exc
    return tensorrt


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
    trt = import_tensorrt()
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
