"""A TensorRT bundle as data: its file names and the plan to build its engine where it runs.

Engines are specific to the GPU model and the TensorRT version, so the portable artifact is the ONNX plus
this plan; the engine is built on the target machine (`runtimes/tensorrt.py`, the one module that imports
TensorRT). The exporter, the runtime, the agent's store and its client all read the names from here, so
none of them needs the others. Networks are strongly typed: the precision is in the ONNX types (an fp16
graph, or int8 Q/DQ nodes), which TensorRT 10 supports and TensorRT 11 requires.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

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
