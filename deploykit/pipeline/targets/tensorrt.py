"""The TensorRT target: a directory MODEL.trt/ holding the TensorRT-ready ONNX (proved in ONNX
Runtime on this machine), plan.json (builder settings and the trtexec line), and model.engine with
timing.cache when this machine has TensorRT and a CUDA GPU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deploykit.core.errors import DeployKitError
from deploykit.core.fsutil import sha256_file
from deploykit.pipeline.fp16_scan import layers_to_keep, scan_fp16_range
from deploykit.pipeline.targets import ExportContext, TargetBuild, register_target, require_parity

OPTIONS = ("precision", "workspace", "require_engine", "calib")
PRECISIONS = ("fp16", "fp32", "int8")
LATENCY_RUNS = 50


@dataclass(frozen=True)
class TensorRTOptions:
    precision: str = "fp16"  # what the target GPUs (Jetson and up) run fast; fp32 on request
    workspace: int | None = None  # MiB
    require_engine: bool = False
    calib: Path | None = None  # images for the fp16 range scan (else the probe)


@register_target("tensorrt", ".trt", options=OPTIONS)
def build_tensorrt(ctx: ExportContext, staged: Path) -> TargetBuild:
    from deploykit.export.tensorrt import PLAN_FILE, engine_unavailable

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
    opts = TensorRTOptions(**{k: options[k] for k in OPTIONS if options.get(k) is not None})
    if opts.precision not in PRECISIONS:
        raise DeployKitError(f"TensorRT target: invalid --precision {opts.precision}",
                             fix=f"one of {', '.join(PRECISIONS)}")
    if opts.precision == "int8":
        raise DeployKitError("TensorRT int8 builds from an explicitly quantized ONNX (Q/DQ nodes from "
                             "calibrated int8 quantization); deploykit does not write one yet",
                             fix="use --precision fp16 (TensorRT has no implicit int8 calibration in strongly "
                                 "typed builds, and none at all from TensorRT 11)")
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
    from deploykit.export.tensorrt import ONNX_FILE
    from deploykit.runtimes.onnxruntime import OrtModel

    path, opset = staged / ONNX_FILE, ctx.options.get("opset", DEFAULT_OPSET)
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


def _plan(ctx: ExportContext, staged: Path, opts: TensorRTOptions):
    from deploykit.export.tensorrt import DEFAULT_WORKSPACE_MIB, ONNX_FILE, BuildPlan

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

    from deploykit.export.tensorrt import build_engine
    from deploykit.profile.latency import measure_side_by_side
    from deploykit.runtimes.tensorrt import TensorRTModel

    version = build_engine(staged, plan)
    model = TensorRTModel(staged / plan.engine)
    batch = ctx.probe.numpy()
    build.parity = require_parity(ctx.reference, model.run(batch), plan.precision, "TensorRT engine")
    latency = measure_side_by_side({"tensorrt": lambda: model.run(batch)}, runs=LATENCY_RUNS)["tensorrt"]
    build.details["engine"] = {"built": True, "tensorrt": version, "gpu": torch.cuda.get_device_name(),
                               "latency_ms": latency.to_dict(), "latency_includes": "host<->device copies"}
    build.details["parity_runtime"] = f"tensorrt {version}"
