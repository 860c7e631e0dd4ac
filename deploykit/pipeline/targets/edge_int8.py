"""int8 for the on-device CPU targets (LiteRT, ExecuTorch): PT2E with the toolchain's own quantizer, under
the same rules as ONNX int8 (`int8`, `int8_search`): the calibration set and its held-out slice, candidates
scored against the float model on the held-out images, the plain one kept unless another measurably wins,
the accuracy budget and the int8 tolerance as gates, int8 timed against float on the device.

    calibration folder -> ranges + held-out images -> float program (fp32 parity, kept for timing)
    -> per candidate (weight granularity): PT2E prepare -> ranges -> convert -> program -> its runtime
       scores it on the held-out images -> best -> int8 parity gate -> int8 vs float on the device

Where this differs from ONNX int8, said so: the activation observer is the quantizer's own (a histogram,
not the minmax/entropy/percentile search), and over the budget no layer is left in float: the PT2E
quantizers of both toolchains refuse a per-module "no quantization" (`set_module_name(name, None)`
asserts), so the build stops instead, naming the budget.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deploykit.core.errors import DeployKitError, ParityError
from deploykit.pipeline.targets.base import ExportContext, TargetBuild
from deploykit.pipeline.targets.edge import EdgeBackend, build_float, deployed_conv_count, write_checked
from deploykit.pipeline.targets.int8 import (_messages, _open_calibration, _time_on_device, int8_options,
                                             resolution_warnings, target_device)
from deploykit.pipeline.targets.int8_search import Holdout, _usable_labels, pick, score

OBSERVER = "histogram"  # both quantizers' activation observer


@dataclass(frozen=True)
class EdgeQuantConfig:
    """A candidate as `int8_search` scores it (method, per_channel, exclude)."""

    per_channel: bool
    method: str = OBSERVER
    exclude: tuple = ()

    def label(self) -> str:
        return f"{self.method}, {'per-channel' if self.per_channel else 'per-tensor'} weights"


def build_edge_int8(ctx: ExportContext, staged: Path, backend: EdgeBackend) -> TargetBuild:
    opts = int8_options(ctx.options)
    _refuse_methods(opts, backend)
    device = target_device(opts, backend.target)
    if device.runtime != backend.target:
        raise DeployKitError(f"--device {device.name} runs {device.runtime}, not {backend.target} files",
                             fix=f"choose a {backend.target} device (e.g. host-cpu-{backend.target}, "
                                 f"pixel6-{backend.target}), or drop --device")
    ctx.stage("calibration images")
    calib = _open_calibration(opts)
    ranges = list(calib.range_batches(ctx.preprocess, ctx.probe.shape[0]))
    holdout = _holdout(ctx, calib)
    threads = ctx.options.get("threads", 2)
    with tempfile.TemporaryDirectory(prefix=f"deploykit-{backend.target}-int8-") as tmp:
        work = Path(tmp)
        ctx.stage("float program")
        float_build = build_float(ctx, work / f"float{staged.suffix}", backend)
        candidates, structures = [], {}
        for index, per_channel in enumerate(_granularity(opts.per_channel), 1):
            scored_path = work / f"candidate-{index}{staged.suffix}"
            ctx.stage(f"candidate {index} ({EdgeQuantConfig(per_channel).label()})")
            scored, structures[scored_path] = _candidate(ctx, backend, EdgeQuantConfig(per_channel), ranges,
                                                         holdout, scored_path, threads)
            candidates.append(scored)
        best = pick(candidates, len(holdout.images), opts.accuracy_budget, plain_method=OBSERVER)
        _gate(best, opts.accuracy_budget, holdout, backend)
        shutil.copyfile(best.path, staged)
        build = _build(ctx, staged, backend, float_build, best, structures, _record(opts, calib, holdout, device,
                                                                                    backend, best, candidates))
        if opts.time_on_device:
            _time_on_device(ctx, work / f"float{staged.suffix}", staged, device, build, opts)
        else:
            build.details["int8"]["speed"] = {"measured": False, "reason": "time_on_device: false"}
    return build


def _refuse_methods(opts, backend: EdgeBackend) -> None:
    if opts.calib_method not in ("auto", OBSERVER):
        raise DeployKitError(f"{backend.target} int8: --calib-method {opts.calib_method} is not available: the "
                             f"toolchain's PT2E quantizer observes activations with its {OBSERVER} observer",
                             fix="drop --calib-method (or pass --calib-method auto)")


def _granularity(per_channel: str) -> tuple[bool, ...]:
    """auto: per-channel and per-tensor weights both scored; the plain (per-channel) one kept unless the
    other fits where it does not or loses a held-out image fewer (`int8_search.pick`)."""
    return {"auto": (True, False), "on": (True,), "off": (False,)}[per_channel]


def _holdout(ctx: ExportContext, calib) -> Holdout:
    """The held-out images and the float training form's logits on them (the parity reference)."""
    images, labels = [], []
    for batch, batch_labels in calib.holdout_batches(ctx.preprocess):
        images.append(batch)
        labels.append(batch_labels)
    x = np.concatenate(images)
    with torch.no_grad():
        reference = np.concatenate([ctx.float_model(torch.from_numpy(x[i:i + 32])).numpy()
                                    for i in range(0, len(x), 32)])
    y = None if any(b is None for b in labels) else np.concatenate(labels)
    y, note = _usable_labels(y, reference)
    return Holdout(x, y, reference, note)


def _candidate(ctx, backend: EdgeBackend, config: EdgeQuantConfig, ranges, holdout: Holdout, path: Path,
               threads: int):
    from deploykit.export.pt2e import quantize_pt2e
    from deploykit.runtimes import fixed_batch

    quantizer = backend.quantizer(config.per_channel)
    quantized = quantize_pt2e(ctx.deployed, ctx.probe, quantizer, ranges, fold_quantize=backend.fold_quantize)
    structure = write_checked(backend, quantized, ctx.probe, path, deployed_conv_count(ctx.deployed), quantizer)
    runtime = backend.load(path, threads)
    return score(holdout, fixed_batch(runtime.run, ctx.probe.shape[0])(holdout.images), config, path), structure


def _gate(best, budget: float, holdout: Holdout, backend: EdgeBackend) -> None:
    if not best.fits(budget):
        raise DeployKitError(
            f"{backend.label} int8 stays over the accuracy budget of {budget:g} points or the int8 tolerance: the "
            f"best candidate ({best.config.label()}) loses {best.loss_points:.2f} points on {len(holdout.images)} "
            f"held-out images ({best.comparison.summary()}); this toolchain cannot leave single layers in float",
            fix="raise --accuracy-budget, calibrate on more images (--calib-size), export int8 to ONNX (which "
                "keeps sensitive layers float), or export fp32; nothing was written")


def _record(opts, calib, holdout: Holdout, device, backend: EdgeBackend, best, candidates) -> dict:
    return {"layout": {"summary": backend.quantizer_note, "runtimes": [backend.target]},
            "made_for": {"device": device.name, "runtime": device.runtime},
            "calibration": calib.record(), "scored_by": holdout.note, "budget_points": opts.accuracy_budget,
            "requested": {"calib_method": opts.calib_method, "per_channel": opts.per_channel},
            "holdout_float_top1": holdout.float_top1, "candidates": [c.to_dict() for c in candidates],
            "chosen": best.to_dict(), "kept_float": [],
            "float_fallback": "none: the toolchain's PT2E quantizer cannot leave a single layer in float"}


def _build(ctx, staged: Path, backend: EdgeBackend, float_build: TargetBuild, best, structures: dict,
           record: dict) -> TargetBuild:
    ctx.stage("parity")
    parity = best.comparison  # the staged file's own logits on the held-out images, against the float model
    if not parity:
        raise ParityError(f"the int8 {backend.label} program differs from the PyTorch model beyond the int8 "
                          f"tolerance: {parity.summary()}", fix="calibrate on more images; nothing was written")
    runtime = backend.load(staged, ctx.options.get("threads", 2))
    record["runtimes"] = {backend.target: runtime.precision_record()}
    details = {"structure": structures[best.path].to_dict(), "parity_runtime": backend.target,
               "parity_probe": f"{len(best.logits)} held-out calibration images",
               "parity_against": "the float training form (PyTorch)",
               "float_parity": float_build.parity.to_dict(), "int8": record}
    warnings = resolution_warnings(len(best.logits), record["budget_points"])
    return TargetBuild(precision="int8", parity=parity, details=details, warnings=warnings,
                       messages=_messages(record))
