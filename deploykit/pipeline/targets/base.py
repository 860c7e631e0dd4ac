"""What every target shares: the context it builds from, what it returns, and its registry entry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from deploykit.core.compare import Comparison, compare_outputs
from deploykit.core.errors import DeployKitError, ParityError
from deploykit.core.preprocess import Preprocess
from deploykit.core.progress import Progress, report_stage
from deploykit.core.registry import Registry


@dataclass
class ExportContext:
    """Everything a target needs, computed once by the pipeline."""

    model_name: str
    float_model: torch.nn.Module  # training form, eval mode: the reference
    deployed: torch.nn.Module  # after reparameterize + fold_bn
    probe: torch.Tensor
    reference: np.ndarray  # float model's output on the probe
    preprocess: Preprocess
    options: dict = field(default_factory=dict)  # target-specific CLI options (opset, precision, ...)
    progress: Progress | None = None  # told each long step's name as it starts (core/progress.py)

    def stage(self, name: str) -> None:
        report_stage(self.progress, name)


@dataclass
class TargetBuild:
    """What a target produced: parity where this machine can run the artifact, else None and why."""

    precision: str
    parity: Comparison | None
    parity_note: str = ""
    details: dict = field(default_factory=dict)  # goes to the manifest's `extra`
    warnings: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # shown to the user after the build


@dataclass(frozen=True)
class Target:
    name: str
    suffix: str
    build: Callable[[ExportContext, Path], TargetBuild]
    options: tuple[str, ...] = ()  # the target-specific ExportRequest.options keys it reads
    variant: Callable[[dict], str] | None = None  # options -> file-name tag before the suffix (".int8")

    def file_name(self, model: str, options: dict) -> str:
        return f"{model}{self.variant(options) if self.variant else ''}{self.suffix}"


def precision_tag(precision: str, default: str) -> str:
    """A target's file-name tag: none for its default precision, `.fp32` / `.int8` / ... otherwise, so two
    precisions of one model never share a name (see pipeline/overwrite.py)."""
    return "" if precision == default else f".{precision}"


# One module per target, imported by the registry on its first lookup (each imports its backend lazily).
TARGET_MODULES = ("onnx", "coreml", "tensorrt", "litert", "executorch")
TARGETS: Registry[Target] = Registry("target", members=tuple(f"deploykit.pipeline.targets.{m}" for m in TARGET_MODULES))


def register_target(name: str, suffix: str, *, options: tuple[str, ...] = (),
                    variant: Callable[[dict], str] | None = None) -> Callable:
    def wrap(fn: Callable[[ExportContext, Path], TargetBuild]) -> Callable:
        TARGETS.add(name, Target(name, suffix, fn, options, variant))
        return fn

    return wrap


def check_options(target: Target, options: dict) -> None:
    """An option that only other targets read is a mistake to report, not to ignore silently."""
    owners: dict[str, list[str]] = {}
    for name in TARGETS.names():
        for key in TARGETS.get(name).options:
            owners.setdefault(key, []).append(name)
    misplaced = sorted(key for key in options if key in owners and key not in target.options)
    if misplaced:
        flags = ", ".join(f"--{key.replace('_', '-')} (for {', '.join(owners[key])})" for key in misplaced)
        raise DeployKitError(f"--target {target.name} does not take {flags}",
                             fix="drop the option, or choose the target it belongs to")


def require_parity(reference: np.ndarray, actual: np.ndarray, precision: str, what: str) -> Comparison:
    """Compare with the tolerance of `precision`; a FAIL aborts the export before anything is published."""
    parity = compare_outputs(reference, actual, precision)
    if not parity:
        raise ParityError(f"{what} differs from the PyTorch model: {parity.summary()}",
                          fix="report this model; nothing was written")
    return parity
