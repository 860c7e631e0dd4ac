"""int8 as a precision of the ONNX and TensorRT targets: calibrate on real images, lay the QDQ graph out
for the runtime that will run it, choose the quantization by measuring candidates (`int8_search`), gate
parity on held-out images, and time int8 against float on the device (`speed`). Nothing is published
unless every step passes.

    calibration folder -> ranges images + held-out images (deploykit.data.calibration)
    device (--device, or the target's) -> QDQ layout of its runtime (deploykit.export.qdq_layout)
    float ONNX (fp32 parity on the probe) -> candidates -> best (within the accuracy budget)
    -> int8 parity gate (ONNX Runtime; OpenVINO recorded too when installed)
    -> int8 vs float latency on the device's runtime -> the artifact
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from deploykit.core.compare import compare_outputs
from deploykit.core.errors import DeployKitError, ParityError
from deploykit.core.fsutil import sha256_file
from deploykit.pipeline.targets.base import ExportContext, TargetBuild

INT8_OPTIONS = ("int8", "calib", "calib_size", "calib_split", "calib_method", "per_channel", "accuracy_budget",
                "device", "require_faster", "time_on_device")
METHOD_CHOICES = ("auto", "minmax", "entropy", "percentile")
PER_CHANNEL_CHOICES = ("auto", "on", "off")
DEFAULT_BUDGET = 1.0  # top-1 points (agreement points without labels)
DEFAULT_DEVICES = {"onnxruntime": "host-cpu-ort", "openvino": "host-cpu-openvino", "litert": "host-cpu-litert",
                   "executorch": "host-cpu-executorch"}


@dataclass(frozen=True)
class Int8Options:
    calib: Path
    calib_size: int | None = None
    calib_split: int | None = None
    calib_method: str = "auto"
    per_channel: str = "auto"
    accuracy_budget: float = DEFAULT_BUDGET
    device: str | None = None  # the device the layout is made for and int8 is timed on
    require_faster: bool = False
    # False: lay out for `device` but do not time there now (a sweep times every artifact through the one
    # measuring actor of each device, so that two measurements never share a device)
    time_on_device: bool = True


def wants_int8(options: dict) -> bool:
    """Any int8 option (even without --int8, to say that it is missing rather than ignore it)."""
    return any(options.get(key) is not None and options.get(key) is not False for key in INT8_OPTIONS)


def int8_options(options: dict) -> Int8Options:
    """The int8 options, checked before any work: every mistake is one message."""
    if not (options.get("int8") or options.get("precision") == "int8"):
        given = [f"--{k.replace('_', '-')}" for k in INT8_OPTIONS[1:] if options.get(k) not in (None, False)]
        raise DeployKitError(f"{', '.join(given)} only apply to int8", fix="add --int8, or drop them")
    if options.get("calib") is None:
        raise DeployKitError("int8 needs calibration images", fix="pass --calib DIR (a few hundred real images)")
    opts = Int8Options(**{k: options[k] for k in INT8_OPTIONS[1:] if options.get(k) is not None})
    _require(opts.calib_method in METHOD_CHOICES, f"--calib-method {opts.calib_method}", METHOD_CHOICES)
    _require(opts.per_channel in PER_CHANNEL_CHOICES, f"--per-channel {opts.per_channel}", PER_CHANNEL_CHOICES)
    if opts.accuracy_budget < 0:
        raise DeployKitError(f"--accuracy-budget {opts.accuracy_budget} is negative", fix="e.g. --accuracy-budget 0.5")
    if opts.require_faster and not opts.time_on_device:
        raise DeployKitError("require_faster needs the int8 build to time int8 on its device",
                             fix="drop require_faster, or drop time_on_device: false")
    return opts


def refuse_int8_options(options: dict, precision: str) -> None:
    """An int8 option on a float export is a mistake to report, not to ignore."""
    given = [f"--{k.replace('_', '-')}" for k in INT8_OPTIONS if k != "calib" and options.get(k) not in (None, False)]
    if options.get("calib") is not None and precision == "fp32":
        given.append("--calib")
    if given:
        raise DeployKitError(f"{', '.join(given)} only apply to int8", fix="add --int8, or drop them")


def _require(ok: bool, what: str, choices: tuple[str, ...]) -> None:
    if not ok:
        raise DeployKitError(f"invalid {what}", fix=f"one of {', '.join(choices)}")


def target_device(opts: Int8Options, default_runtime: str):
    """The device int8 is made for: --device, else this machine's device of the target's default runtime."""
    from deploykit.core.devices import load_device

    return load_device(opts.device or DEFAULT_DEVICES.get(default_runtime, "host-cpu-ort"))


def layout_for(device):
    from deploykit.export.qdq_layout import layout_for_runtime

    layout = layout_for_runtime(device.runtime)
    if layout is None:
        raise DeployKitError(f"device {device.name} runs {device.runtime}, which takes no int8 QDQ ONNX",
                             fix=f"export with --target {device.runtime} --precision int8, or choose a device "
                                 "whose runtime is onnxruntime, openvino or tensorrt")
    return layout


# --- the build ------------------------------------------------------------------------------------

FloatExport = Callable[[ExportContext, Path], TargetBuild]


def build_int8(ctx: ExportContext, staged: Path, export_float: FloatExport, *, layout, device=None,
               untimed: str = "") -> TargetBuild:
    """The int8 QDQ ONNX at `staged` in `layout`, with the record of how it was chosen in `details['int8']`;
    timed against float on `device` (None: not timed here, `untimed` says why)."""
    from deploykit.pipeline.targets.int8_search import load_holdout

    opts = int8_options(ctx.options)
    ctx.stage("calibration images")
    calib = _open_calibration(opts)
    threads = ctx.options.get("threads", 2)
    ranges = list(calib.range_batches(ctx.preprocess, ctx.probe.shape[0]))  # decode all before exporting
    with tempfile.TemporaryDirectory(prefix="deploykit-int8-") as tmp:
        work = Path(tmp)
        float_build = export_float(ctx, work / "float.onnx")
        holdout = load_holdout(ctx, calib, work / "float.onnx", threads)
        choice = _choose(opts, layout, work, ranges, holdout, threads, ctx.stage)
        shutil.copyfile(choice.best.path, staged)
        record = _record(opts, calib, holdout, choice, layout, device)
        record["float_onnx"] = {"sha256": sha256_file(work / "float.onnx"),
                                "size_bytes": (work / "float.onnx").stat().st_size}
        build = _finish(ctx, staged, float_build, holdout, record, choice, opts)
        if device is None or not opts.time_on_device:
            untimed = untimed if device is None else "time_on_device: false (the caller times it, as a sweep does)"
            build.details["int8"]["speed"] = {"measured": False, "reason": untimed}
            build.messages.append(f"int8 speed not measured here: {untimed}")
        else:
            _time_on_device(ctx, work / "float.onnx", staged, device, build, opts)
    return build


def _choose(opts: Int8Options, layout, work: Path, ranges, holdout, threads: int, stage):
    from deploykit.export.quantize import METHODS, Int8Quantizer
    from deploykit.pipeline.targets.int8_search import SearchSpace, choose

    methods = METHODS if opts.calib_method == "auto" else (opts.calib_method,)
    space = SearchSpace(methods, opts.per_channel, opts.accuracy_budget)
    make = lambda prepared: Int8Quantizer(prepared, ranges, workdir=work, layout=layout, methods=methods)  # noqa: E731
    return choose(space, work / "float.onnx", make, holdout, work=work, threads=threads, stage=stage)


def _open_calibration(opts: Int8Options):
    """The calibration images, `--calib` resolved as `--data` is (else under the shared data folder)."""
    from deploykit.data.calibration import CalibrationConfig, open_calibration
    from deploykit.pipeline.evaluate import resolve_data

    try:
        path = resolve_data(Path(opts.calib))
    except DeployKitError as exc:
        raise DeployKitError(f"calibration images (--calib): {exc.message}", fix="check the --calib path") from exc
    return open_calibration(CalibrationConfig(path, size=opts.calib_size, split=opts.calib_split))


def _record(opts: Int8Options, calib, holdout, choice, layout, device) -> dict:
    return {
        "layout": layout.to_dict(), "made_for": {"device": getattr(device, "name", None),
                                                 "runtime": getattr(device, "runtime", layout.runtimes[0])},
        "calibration": calib.record(), "scored_by": holdout.note, "budget_points": opts.accuracy_budget,
        "requested": {"calib_method": opts.calib_method, "per_channel": opts.per_channel},
        "holdout_float_top1": holdout.float_top1, "readiness": choice.readiness.to_dict(),
        "candidates": [c.to_dict() for c in choice.candidates], "chosen": choice.best.to_dict(),
        "kept_float": choice.kept, "sensitivity": choice.ranking,
    }


def _finish(ctx, staged: Path, float_build: TargetBuild, holdout, record: dict, choice, opts) -> TargetBuild:
    from deploykit.export.onnx import count_ops
    from deploykit.runtimes.onnxruntime import OrtModel

    ctx.stage("parity")
    if sha256_file(staged) != sha256_file(choice.best.path):
        raise DeployKitError("the staged int8 file is not the scored candidate", fix="report this")
    parity = compare_outputs(holdout.reference, choice.best.logits, "int8")  # the staged file's own logits
    if not parity:
        raise ParityError(f"the int8 ONNX (ONNX Runtime, {len(holdout.images)} held-out calibration images) "
                          f"differs from the PyTorch model beyond the int8 tolerance: {parity.summary()}",
                          fix="lower --accuracy-budget, use --per-channel auto, or calibrate on more or more "
                              "representative images; nothing was written")
    record["runtimes"] = {"onnxruntime": OrtModel(staged).precision_record()}
    warnings = list(float_build.warnings) + _readiness_warnings(choice.readiness, opts)
    warnings += resolution_warnings(len(holdout.images), opts.accuracy_budget, opts.calib_split)
    warnings += _openvino_check(staged, holdout, record, ctx.options.get("threads", 2))
    details = {**{k: v for k, v in float_build.details.items() if k not in ("op_counts", "parity_runtime")},
               "op_counts": count_ops(staged), "parity_runtime": "onnxruntime",
               "parity_probe": f"{len(holdout.images)} held-out calibration images from {opts.calib}",
               "parity_against": "the float model's fp32 ONNX (itself within the fp32 tolerance of PyTorch)",
               "float_parity": float_build.parity.to_dict(), "int8": record}
    return TargetBuild(precision="int8", parity=parity, details=details, warnings=warnings,
                       messages=_messages(record))


def _time_on_device(ctx, float_path: Path, staged: Path, device, build: TargetBuild, opts: Int8Options) -> None:
    """Time int8 against float where the layout's runtime runs; say it, and refuse with --require-faster."""
    from deploykit import runtimes
    from deploykit.pipeline.targets.speed import require_faster, time_against_float

    reason = runtimes.unavailable(device.runtime) if device.is_local else None
    check = None
    if not reason:
        ctx.stage(f"int8 vs float on {device.name}")
        try:
            check = time_against_float(float_path, staged, device, ctx.probe.numpy())
        except DeployKitError as exc:
            if device.is_local:
                raise
            reason = f"its agent did not answer ({exc.message})"
    if check is None:
        build.details["int8"]["speed"] = {"measured": False, "reason": reason}
        build.warnings.append(f"int8 not timed against float on {device.name}: {reason}")
    else:
        build.details["int8"]["speed"] = {"measured": True, **check.to_dict()}
        (build.messages if check.faster else build.warnings).append(check.message())
    if opts.require_faster:
        require_faster(check, reason or "")


def resolution_warnings(holdout_images: int, budget: float, split: int | None = None) -> list[str]:
    """A held-out slice too small for the budget: one changed prediction then costs more than the budget,
    so the search keeps layers float over a single image (seen: 64 images -> 21 held out -> 24 layers float).
    The advice must be followable: under --calib-split N no --calib-size above N is accepted."""
    from deploykit.data.calibration import HOLDOUT_FRACTION

    per_image = 100.0 / holdout_images
    if per_image <= budget:
        return []
    needed = math.ceil(math.ceil(100.0 / budget) / HOLDOUT_FRACTION) if budget > 0 else None
    fix = f"pass --calib-size {needed} or more" if needed else "a budget of 0 tolerates no changed prediction"
    if needed and split is not None and needed > split:
        fix = (f"pass --calib-split {needed} (or more), or keep --calib-split {split} with an "
               f"--accuracy-budget of {math.ceil(per_image * 100) / 100:g} or more")
    return [f"the accuracy budget cannot resolve one image: {holdout_images} held-out images make one changed "
            f"prediction {per_image:.1f} points, over the budget of {budget:g}, so layers may be kept float "
            f"for a single image; {fix}"]


def _readiness_warnings(readiness, opts: Int8Options) -> list[str]:
    if readiness.per_tensor_safe:
        return []
    if opts.per_channel == "off":
        return [f"--per-channel off: {readiness.summary()}"]
    return [f"{readiness.summary()}; per-channel weights used"] if opts.per_channel == "auto" else []


def _openvino_check(staged: Path, holdout, record: dict, threads: int) -> list[str]:
    """The same held-out comparison in OpenVINO, where installed: recorded, and a warning if it fails
    (ONNX Runtime's verdict gates the export; OpenVINO is another consumer of the same file)."""
    from deploykit.runtimes import fixed_batch
    from deploykit.pipeline.targets.int8_search import static_batch

    try:
        from deploykit.runtimes.openvino import OpenVINOModel
        model = OpenVINOModel(staged, threads=threads)
    except DeployKitError as exc:
        record["runtimes"]["openvino"] = {"checked": False, "reason": exc.message}
        return []
    logits = fixed_batch(model.run, static_batch(staged))(holdout.images)
    parity = compare_outputs(holdout.reference, logits, "int8")
    record["runtimes"]["openvino"] = {**model.precision_record(), "parity": parity.to_dict()}
    return [] if parity else [f"in OpenVINO the int8 model misses the int8 tolerance: {parity.summary()}"]


def _messages(record: dict) -> list[str]:
    chosen, float_top1 = record["chosen"], record["holdout_float_top1"]
    weights = "per-channel" if chosen["per_channel"] else "per-tensor"
    if float_top1 is None:
        measured = f"top-1 agreement with float {100 * chosen['top1_agreement']:.1f} %"
    else:
        measured = f"top-1 {100 * float_top1:.1f} % float -> {100 * chosen['top1']:.1f} % int8"
    made_for = record["made_for"]
    where = f" ({made_for['device']})" if made_for["device"] else ""
    lines = [f"int8 laid out for {made_for['runtime']}{where}: {record['layout']['summary']}",
             f"int8: {chosen['method']} calibration, {weights} weights (best of {len(record['candidates'])} "
             f"candidates); on {record['calibration']['holdout']} held-out images {measured}, "
             f"loss {chosen['loss_points']:.2f} points (budget {record['budget_points']:g})"]
    if chosen.get("bias_correction") is False and record["layout"]["bias_correction"]:
        lines.append("biases left uncorrected: the held-out images scored the layout's bias correction worse")
    if record["kept_float"]:
        layers = ", ".join(entry["layer"] for entry in record["kept_float"])
        lines.append(f"kept in float to fit the budget: {len(record['kept_float'])} layers ({layers})")
    for name, runtime in record["runtimes"].items():
        if "summary" in runtime:
            lines.append(f"{name} runs it as: {runtime['summary']}")
    return lines
