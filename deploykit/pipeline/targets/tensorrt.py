"""The TensorRT target: a directory MODEL.trt/ holding the TensorRT-ready ONNX (proved in ONNX
Runtime on this machine), plan.json (builder settings and the trtexec line), and model.engine with
timing.cache when this machine has TensorRT and a CUDA GPU."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from deploykit.core.errors import DeployKitError
from deploykit.core.fsutil import sha256_file
from deploykit.core.options import check_choices
from deploykit.pipeline.targets.base import (ExportContext, TargetBuild, precision_tag, register_target,
                                             require_parity)
from deploykit.pipeline.targets.fp16 import layers_to_keep, scan_fp16_range

INT8_SEARCH_OPTIONS = ("calib_size", "calib_split", "calib_method", "per_channel", "accuracy_budget")
OPTIONS = ("precision", "workspace", "require_engine", "calib", *INT8_SEARCH_OPTIONS)
LATENCY_RUNS = 50


@dataclass(frozen=True)
class TensorRTOptions:
    precision: Literal["fp16", "fp32", "int8"] = "fp16"  # what the target GPUs (Jetson and up) run fast
    workspace: int | None = None  # MiB
    require_engine: bool = False
    calib: Path | None = None  # images for the fp16 range scan (else the probe); int8's calibration images

    def __post_init__(self) -> None:
        check_choices(self, what="TensorRT target")


@register_target("tensorrt", ".trt", options=OPTIONS,
                 variant=lambda options: precision_tag(tensorrt_options(options).precision, "fp16"))
def build_tensorrt(ctx: ExportContext, staged: Path) -> TargetBuild:
    from deploykit.core.tensorrt_plan import PLAN_FILE
    from deploykit.runtimes.tensorrt import engine_unavailable

    opts = tensorrt_options(ctx.options)
    reason = engine_unavailable()
    if reason and opts.require_engine:
        raise DeployKitError(f"--require-engine: no TensorRT engine can be built here: {reason}",
                             fix="run on the target machine (NVIDIA GPU, pip install \"deploykit[tensorrt]\"), "
                                 "or drop --require-engine to get the ONNX and the build plan")
    staged.mkdir()
    build = write_onnx(ctx, staged, opts)
    plan = _plan(ctx, staged, opts)
    plan.write(staged / PLAN_FILE)
    build.details["plan"] = plan.to_dict()
    if reason:
        _explain_no_engine(build, staged.name, plan, reason)
    else:
        _build_and_run_engine(ctx, staged, plan, build)
    return build


def tensorrt_options(options: dict) -> TensorRTOptions:
    own = ("precision", "workspace", "require_engine", "calib")
    opts = TensorRTOptions(**{k: options[k] for k in own if options.get(k) is not None})
    searched = [f"--{k.replace('_', '-')}" for k in INT8_SEARCH_OPTIONS if options.get(k) is not None]
    if searched and opts.precision != "int8":
        raise DeployKitError(f"{', '.join(searched)} only apply to --precision int8", fix="add --precision int8")
    if opts.precision == "int8" and opts.calib is None:
        raise DeployKitError("TensorRT int8 needs calibration images (a strongly typed network takes its int8 "
                             "scales from the ONNX's Q/DQ nodes)", fix="pass --calib DIR (a few hundred real images)")
    if opts.workspace is not None and opts.workspace <= 0:
        raise DeployKitError(f"--workspace must be positive MiB, got {opts.workspace}", fix="e.g. --workspace 1024")
    return opts


def write_onnx(ctx: ExportContext, staged: Path, opts: TensorRTOptions) -> TargetBuild:
    """The ONNX TensorRT will parse, typed in the requested precision, compared with PyTorch in ONNX
    Runtime. ORT's CPU kernels run much of an fp16 graph in fp32 between casts, so for fp16 this
    proves the graph and its fp16 weights, not fp16 arithmetic; the range scan covers overflow."""
    import onnx

    from deploykit.export.onnx import DEFAULT_OPSET, count_ops, export_onnx
    from deploykit.export.onnx_fp16 import convert_to_fp16
    from deploykit.core.tensorrt_plan import ONNX_FILE
    from deploykit.runtimes.onnxruntime import OrtModel

    path, opset = staged / ONNX_FILE, ctx.options.get("opset", DEFAULT_OPSET)
    if opts.precision == "int8":
        return _write_int8_onnx(ctx, path)
    result = export_onnx(ctx.deployed, ctx.probe, path, opset=opset)
    details = {"opset": opset, "simplified": result.simplified}
    if opts.precision == "fp16":
        scan = scan_fp16_range(ctx, opts.calib)
        converted, kept = convert_to_fp16(onnx.load(str(path)), keep_fp32=layers_to_keep(scan))
        onnx.save(converted, str(path))
        details["fp16_range"] = {**scan.to_dict(), "kept_fp32_nodes": kept}
    actual = OrtModel(path, threads=ctx.options.get("threads", 2)).run(ctx.probe.numpy())
    parity = require_parity(ctx.reference, actual, opts.precision,
                            f"the {opts.precision} ONNX for TensorRT (ONNX Runtime)")
    details.update(op_counts=count_ops(path), onnx_parity={**parity.to_dict(), "runtime": "onnxruntime (CPU)"})
    return TargetBuild(precision=opts.precision, parity=parity, details=details, warnings=result.warnings)


def _write_int8_onnx(ctx: ExportContext, path: Path) -> TargetBuild:
    """The QDQ ONNX in TensorRT's layout (s8 symmetric, Q/DQ on op inputs), chosen and checked like every
    int8 artifact (`pipeline.targets.int8`); its latency is measured where the engine is built."""
    from deploykit.export.qdq_layout import LAYOUTS
    from deploykit.pipeline.targets.int8 import build_int8
    from deploykit.pipeline.targets.onnx import build_float_onnx

    options = {k: v for k, v in ctx.options.items() if k not in ("precision", "workspace", "require_engine")}
    int8_ctx = dataclasses.replace(ctx, options={**options, "int8": True})
    build = build_int8(int8_ctx, path, build_float_onnx, layout=LAYOUTS["tensorrt"],
                       untimed="TensorRT int8 runs where its engine is built: profile the artifact on the device "
                               "(deploykit profile MODEL.trt --device ...)")
    build.details["onnx_parity"] = {**build.parity.to_dict(), "runtime": "onnxruntime (CPU), held-out images"}
    return build


def _plan(ctx: ExportContext, staged: Path, opts: TensorRTOptions):
    from deploykit.core.tensorrt_plan import DEFAULT_WORKSPACE_MIB, ONNX_FILE, BuildPlan

    return BuildPlan(precision=opts.precision, workspace_mib=opts.workspace or DEFAULT_WORKSPACE_MIB,
                     onnx_sha256=sha256_file(staged / ONNX_FILE),
                     input={"name": "input", "shape": list(ctx.probe.shape), "dtype": "float32"},
                     output={"name": "logits", "shape": list(ctx.reference.shape), "dtype": "float32"})


def _explain_no_engine(build: TargetBuild, directory: str, plan, reason: str) -> None:
    build.details["engine"] = {"built": False, "reason": reason}
    build.details["parity_runtime"] = "onnxruntime, on the ONNX inside; no engine built here"
    build.messages += [f"no TensorRT engine built here: {reason}.",
                       "Build it on the target GPU (an engine runs only on the GPU model and TensorRT version "
                       f"that built it), inside {directory}/:",
                       f"  {' '.join(plan.trtexec())}"]


def _build_and_run_engine(ctx: ExportContext, staged: Path, plan, build: TargetBuild) -> None:
    import torch

    from deploykit.runtimes.tensorrt import build_engine
    from deploykit.profile.latency import measure_side_by_side
    from deploykit.runtimes.tensorrt import TensorRTModel

    version = build_engine(staged, plan)
    model = TensorRTModel(staged / plan.engine)
    batch = ctx.probe.numpy()
    build.parity = require_parity(_engine_reference(ctx, staged / plan.onnx, plan.precision), model.run(batch),
                                  plan.precision, "TensorRT engine")
    latency = measure_side_by_side({"tensorrt": lambda: model.run(batch)}, runs=LATENCY_RUNS)["tensorrt"]
    build.details["engine"] = {"built": True, "tensorrt": version, "gpu": torch.cuda.get_device_name(),
                               "latency_ms": latency.to_dict(), "latency_includes": "host<->device copies"}
    build.details["parity_runtime"] = f"tensorrt {version}"


def _engine_reference(ctx: ExportContext, onnx_path: Path, precision: str):
    """What the engine must reproduce on the probe: the PyTorch model, or for int8 the same QDQ graph run
    in ONNX Runtime (the int8 graph's own accuracy was gated on held-out images already)."""
    if precision != "int8":
        return ctx.reference
    from deploykit.runtimes.onnxruntime import OrtModel

    return OrtModel(onnx_path, threads=ctx.options.get("threads", 2)).run(ctx.probe.numpy())
