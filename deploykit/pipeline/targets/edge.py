"""What the two on-device CPU targets share (`litert`: `.tflite`, `executorch`: `.pte`): both convert the
deploy form through torch.export and run on XNNPACK, so one build serves both, given the backend's writer,
loader and quantizer.

    deploy form -> write (the op counts of the written program) -> structure check -> run in the
    target's own runtime on the probe -> fp32 parity against the float training form
    fp16: the same, written by the backend's fp16 writer, parity with the fp16 tolerance.
    int8: see `edge_int8`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from deploykit.core.errors import DeployKitError
from deploykit.pipeline.targets.base import ExportContext, TargetBuild, require_parity

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Structure:
    """The compute ops in the written program against the deploy form's, and how they were counted."""

    convs: int
    batch_norms: int
    deployed_convs: int  # filled in by `write_checked`
    counted: str
    ops: dict

    def problems(self) -> list[str]:
        found = []
        if self.batch_norms:
            found.append(f"{self.batch_norms} batch-norm ops left (fold_bn should have removed them)")
        if self.convs != self.deployed_convs:
            found.append(f"{self.convs} convolutions, the deploy form has {self.deployed_convs}")
        return found

    def to_dict(self) -> dict:
        return {"conv_count": self.convs, "batch_norm_count": self.batch_norms,
                "deployed_conv_count": self.deployed_convs, "counted": self.counted, "ops": self.ops}


@dataclass(frozen=True)
class EdgeBackend:
    target: str  # the target and runtime name: "litert" or "executorch"
    label: str  # what the user reads: "LiteRT (XNNPACK)"
    # model, probe, path, the PT2E quantizer that annotated the model (None: float) -> what it wrote
    write: Callable[[torch.nn.Module, torch.Tensor, Path, object], Structure]
    write_fp16: Callable[[torch.nn.Module, torch.Tensor, Path], Structure]  # model, probe, path -> what it wrote
    fp16_note: str  # what the fp16 file stores and computes, for the record
    load: Callable[[Path, int], object]  # path, threads -> a model with run(batch) and precision_record()
    quantizer: Callable[[bool], object]  # per_channel -> the toolchain's PT2E quantizer
    quantizer_note: str  # how that quantizer quantizes, for the record
    fold_quantize: bool  # PT2E's convert: int8 weight constants (True) or float weights behind quantize ops


def edge_precision(options: dict, target: str) -> str:
    precision = options.get("precision") or ("int8" if options.get("int8") else "fp32")
    if precision not in PRECISIONS:
        raise DeployKitError(f"{target} target: invalid --precision {precision}",
                             fix=f"one of {', '.join(PRECISIONS)}")
    if options.get("int8") and precision != "int8":
        raise DeployKitError(f"--int8 and --precision {precision} contradict each other", fix="drop one of them")
    return precision


def variant(target: str) -> Callable[[dict], str]:
    return lambda options: "" if edge_precision(options, target) == "fp32" else f".{edge_precision(options, target)}"


def deployed_conv_count(model: torch.nn.Module) -> int:
    """The convolutions the deploy form runs: one op each is expected in the written program."""
    return sum(isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in model.modules())


def write_checked(backend: EdgeBackend, model: torch.nn.Module, probe: torch.Tensor, path: Path,
                  deployed_convs: int, quantizer=None, *, fp16: bool = False) -> Structure:
    """Write the program and check its structure: no batch norm, one conv per deployed conv."""
    written = backend.write_fp16(model, probe, path) if fp16 else backend.write(model, probe, path, quantizer)
    structure = replace(written, deployed_convs=deployed_convs)
    if structure.problems():
        raise DeployKitError(f"the {backend.label} program failed its structure check: "
                             + "; ".join(structure.problems()), fix="report this model; nothing was written")
    return structure


def build_edge(ctx: ExportContext, staged: Path, backend: EdgeBackend) -> TargetBuild:
    """The target's build: int8 through the toolchain's PT2E quantizer (`edge_int8`), else fp32 or fp16."""
    from deploykit.pipeline.targets.int8 import refuse_int8_options

    precision = edge_precision(ctx.options, backend.target)
    if precision == "int8":
        from deploykit.pipeline.targets.edge_int8 import build_edge_int8

        return build_edge_int8(ctx, staged, backend)
    refuse_int8_options(ctx.options, "fp32")  # neither float build reads images (ONNX fp16 does: its range check)
    return build_float(ctx, staged, backend, precision)


def build_float(ctx: ExportContext, staged: Path, backend: EdgeBackend, precision: str = "fp32") -> TargetBuild:
    """fp32 or fp16: the deploy form written, checked, and run in the target's runtime against the float
    model with that precision's tolerance."""
    threads = ctx.options.get("threads", 2)
    structure = write_checked(backend, ctx.deployed, ctx.probe, staged, deployed_conv_count(ctx.deployed),
                              fp16=precision == "fp16")
    runtime = backend.load(staged, threads)
    parity = require_parity(ctx.reference, runtime.run(ctx.probe.numpy()), precision,
                            f"the {precision} {backend.label} program")
    details = {"structure": structure.to_dict(), "parity_runtime": f"{backend.target} ({threads} threads)",
               "runtime": runtime.precision_record()}
    if precision == "fp16":
        details["fp16"] = backend.fp16_note
    return TargetBuild(precision=precision, parity=parity, details=details)
