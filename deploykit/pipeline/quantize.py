"""The int8 path of the ONNX target: calibrate on real images, choose the quantization by measuring the
candidates, keep the most sensitive layers in float until an accuracy budget holds, and gate parity on
held-out images. Nothing is published unless every step passes.

    calibration folder -> ranges images + held-out images (deploykit.data.calibration)
    float ONNX (fp32 parity on the probe) -> prepared -> candidates (method x weight granularity)
    -> scored on the held-out images against the float model -> best
    -> over budget? rank nodes by the output noise each adds alone (deploykit.profile.sensitivity),
       leave the worst k in float, k = 1, 2, 3, 4, 6, 8, ... until the loss fits
    -> int8 parity gate (ONNX Runtime; OpenVINO too when installed) -> the artifact

The held-out images choose the candidate, so their score is optimistic: evaluate the artifact on
images it never saw (`deploykit eval --exclude-calib`).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from deploykit.core.compare import Comparison, compare_outputs
from deploykit.core.errors import DeployKitError, ParityError
from deploykit.core.fsutil import sha256_file
from deploykit.pipeline.targets import ExportContext, TargetBuild

INT8_OPTIONS = ("int8", "calib", "calib_size", "calib_split", "calib_method", "per_channel", "accuracy_budget")
METHOD_CHOICES = ("auto", "minmax", "entropy", "percentile")
PER_CHANNEL_CHOICES = ("auto", "on", "off")
DEFAULT_BUDGET = 1.0  # top-1 points (agreement points without labels)
SENSITIVITY_IMAGES = 16  # per node: the output noise of that node alone, on these images
EXCLUSION_STEPS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)


@dataclass(frozen=True)
class Int8Options:
    calib: Path
    calib_size: int | None = None
    calib_split: int | None = None
    calib_method: str = "auto"
    per_channel: str = "auto"
    accuracy_budget: float = DEFAULT_BUDGET


def wants_int8(options: dict) -> bool:
    """Any int8 option (even without --int8, to say that it is missing rather than ignore it)."""
    return any(options.get(key) is not None and options.get(key) is not False for key in INT8_OPTIONS)


def int8_options(options: dict) -> Int8Options:
    """The int8 options, checked before any work: every mistake is one message."""
    if not options.get("int8"):
        given = [f"--{k.replace('_', '-')}" for k in INT8_OPTIONS[1:] if options.get(k) is not None]
        raise DeployKitError(f"{', '.join(given)} only apply to int8", fix="add --int8, or drop them")
    if options.get("calib") is None:
        raise DeployKitError("--int8 needs calibration images", fix="pass --calib DIR (a few hundred real images)")
    opts = Int8Options(**{k: options[k] for k in INT8_OPTIONS[1:] if options.get(k) is not None})
    _require(opts.calib_method in METHOD_CHOICES, f"--calib-method {opts.calib_method}", METHOD_CHOICES)
    _require(opts.per_channel in PER_CHANNEL_CHOICES, f"--per-channel {opts.per_channel}", PER_CHANNEL_CHOICES)
    if opts.accuracy_budget < 0:
        raise DeployKitError(f"--accuracy-budget {opts.accuracy_budget} is negative", fix="e.g. --accuracy-budget 0.5")
    return opts


def _require(ok: bool, what: str, choices: tuple[str, ...]) -> None:
    if not ok:
        raise DeployKitError(f"invalid {what}", fix=f"one of {', '.join(choices)}")


# --- scoring --------------------------------------------------------------------------------------

@dataclass
class Holdout:
    """The held-out images, their labels if they belong to the model's classes, the float model's logits."""

    images: np.ndarray
    labels: np.ndarray | None
    reference: np.ndarray
    note: str

    @property
    def float_top1(self) -> float | None:
        return None if self.labels is None else float((self.reference.argmax(1) == self.labels).mean())


@dataclass
class Score:
    config: object  # export.quantize.QuantizeConfig
    comparison: Comparison
    top1: float | None
    loss_points: float
    path: Path = field(repr=False, default=Path())

    def fits(self, budget: float) -> bool:
        """Within the accuracy budget, and within the int8 tolerance the parity gate will apply."""
        return self.loss_points <= budget and self.comparison.passed

    def key(self) -> tuple:
        """Best first: least loss, then most agreement, then SQNR. A gain over the float model is noise
        on a held-out slice (int8 only adds error), so it counts as no loss, never as a win."""
        return (-max(self.loss_points, 0.0), self.comparison.top1_agreement, self.comparison.sqnr_db)

    def to_dict(self) -> dict:
        c = self.comparison
        return {"method": self.config.method, "per_channel": self.config.per_channel,
                "kept_float": len(self.config.exclude), "loss_points": round(self.loss_points, 3),
                "top1": None if self.top1 is None else round(self.top1, 4),
                "top1_agreement": round(c.top1_agreement, 4), "sqnr_db": round(c.sqnr_db, 2),
                "cosine": round(c.cosine, 5)}


def score(holdout: Holdout, logits: np.ndarray, config, path: Path) -> Score:
    comparison = compare_outputs(holdout.reference, logits, "int8")
    if holdout.labels is None:
        return Score(config, comparison, None, 100.0 * (1.0 - comparison.top1_agreement), path)
    top1 = float((logits.argmax(1) == holdout.labels).mean())
    return Score(config, comparison, top1, 100.0 * (holdout.float_top1 - top1), path)


def load_holdout(ctx: ExportContext, calib) -> Holdout:
    """Decode the held-out images and run the float (training-form) model on them."""
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


def _usable_labels(labels: np.ndarray | None, reference: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Labels count only if they are the model's classes: the float model must clearly beat chance on them
    (a folder of class folders named for another task would otherwise score noise)."""
    if labels is None:
        return None, "top-1 agreement with the float model (the calibration images have no labels)"
    classes = reference.shape[1]
    top1 = float((reference.argmax(1) == labels).mean()) if labels.max() < classes else 0.0
    if top1 < max(0.2, 3.0 / classes):
        return None, (f"top-1 agreement with the float model (the folder's labels are not this model's "
                      f"classes: float top-1 on them is {top1:.0%})")
    return labels, "top-1 against the labels of the held-out images"


# --- the build ------------------------------------------------------------------------------------

FloatExport = Callable[[ExportContext, Path], TargetBuild]


def build_int8(ctx: ExportContext, staged: Path, export_float: FloatExport) -> TargetBuild:
    """The int8 QDQ ONNX at `staged`, with the record of how it was chosen in `details['int8']`."""
    opts = int8_options(ctx.options)
    calib = _open_calibration(opts)
    threads = ctx.options.get("threads", 2)
    ranges = list(calib.range_batches(ctx.preprocess, ctx.probe.shape[0]))  # decode all before exporting
    holdout = load_holdout(ctx, calib)
    with tempfile.TemporaryDirectory(prefix="deploykit-int8-") as tmp:
        work = Path(tmp)
        float_build = export_float(ctx, work / "float.onnx")
        choice = choose(opts, work / "float.onnx", ranges, holdout, work=work, threads=threads)
        shutil.copyfile(choice.best.path, staged)
        record = _record(opts, calib, holdout, choice)
        record["float_onnx"] = {"sha256": sha256_file(work / "float.onnx"),
                                "size_bytes": (work / "float.onnx").stat().st_size}
    return _finish(ctx, staged, float_build, holdout, record, choice.readiness, opts)


@dataclass
class Choice:
    best: Score
    candidates: list[Score]
    readiness: object  # export.int8_readiness.Readiness
    kept: list[dict] = field(default_factory=list)  # layers left in float, most sensitive first
    ranking: list[dict] = field(default_factory=list)  # the sensitivity ranking, when it was needed


def choose(opts: Int8Options, float_path: Path, ranges: list[np.ndarray], holdout: Holdout, *, work: Path,
           threads: int) -> Choice:
    """Quantize the candidates, keep the best; over budget, leave the most sensitive layers float."""
    import onnx

    from deploykit.export.int8_readiness import check_weight_ranges, layer_names
    from deploykit.export.quantize import Int8Quantizer, prepare_for_quantization

    prepared = prepare_for_quantization(float_path, work / "prepared.onnx")
    model = onnx.load(str(prepared))
    readiness = check_weight_ranges(model)
    search = _Search(Int8Quantizer(prepared, ranges, workdir=work), holdout, work, threads)
    candidates = search.candidates(opts, readiness.per_tensor_safe)
    choice = Choice(max(candidates, key=Score.key), candidates, readiness)
    if not choice.best.fits(opts.accuracy_budget):
        choice.best, choice.kept, choice.ranking = search.fit_budget(choice.best, opts.accuracy_budget, prepared,
                                                                     layer_names(model))
    return choice


def _open_calibration(opts: Int8Options):
    """The calibration images, `--calib` resolved as `--data` is (else under the shared data folder)."""
    from deploykit.data.calibration import CalibrationConfig, open_calibration
    from deploykit.pipeline.evaluate import resolve_data

    try:
        path = resolve_data(Path(opts.calib))
    except DeployKitError as exc:
        raise DeployKitError(f"calibration images (--calib): {exc.message}", fix="check the --calib path") from exc
    return open_calibration(CalibrationConfig(path, size=opts.calib_size, split=opts.calib_split))


class _Search:
    """Quantize-and-score, with each candidate's file kept in the work folder."""

    def __init__(self, quantizer, holdout: Holdout, work: Path, threads: int) -> None:
        self.quantizer, self.holdout, self.work, self.threads = quantizer, holdout, work, threads
        self.count = 0

    def run(self, config) -> Score:
        self.count += 1
        path = self.quantizer.quantize(config, self.work / f"candidate-{self.count}.onnx")
        return score(self.holdout, run_onnx(path, self.holdout.images, self.threads), config, path)

    def candidates(self, opts: Int8Options, per_tensor_safe: bool) -> list[Score]:
        from deploykit.export.quantize import METHODS, QuantizeConfig

        methods = METHODS if opts.calib_method == "auto" else (opts.calib_method,)
        auto = (True, False) if per_tensor_safe else (True,)  # per-tensor only where the weights allow it
        granularity = {"on": (True,), "off": (False,)}.get(opts.per_channel, auto)
        return [self.run(QuantizeConfig(m, pc)) for m in methods for pc in granularity]

    def fit_budget(self, best: Score, budget: float, prepared: Path, names: dict) -> tuple[Score, list, list]:
        """Leave the k nodes that add the most output noise in float, for growing k, until it fits."""
        from deploykit.profile.sensitivity import node_sensitivity

        images, batch = self.holdout.images[:SENSITIVITY_IMAGES], _static_batch(best.path)
        feed = (images[i:i + batch] for i in range(0, len(images) - batch + 1, batch))
        ranking = node_sensitivity(prepared, best.path, feed, threads=self.threads)
        ranked = [{"layer": names.get(s.node, s.node), **s.to_dict()} for s in ranking]
        tried = best
        for k in (k for k in EXCLUSION_STEPS if k <= len(ranking)):
            tried = self.run(replace(best.config, exclude=tuple(s.node for s in ranking[:k])))
            if tried.fits(budget):
                return tried, ranked[:k], ranked[:20]
        raise DeployKitError(
            f"int8 stays over the accuracy budget of {budget:g} points or the int8 tolerance: the best "
            f"candidate ({best.config.label()}) loses {best.loss_points:.2f} ({best.comparison.summary()}); with "
            f"its {len(tried.config.exclude)} most sensitive layers in float: {tried.loss_points:.2f} "
            f"({tried.comparison.summary()})",
            fix="raise --accuracy-budget, use --per-channel auto, calibrate on more images (--calib-size), "
                "or export without --int8")


def run_onnx(path: Path, images: np.ndarray, threads: int) -> np.ndarray:
    """Logits of an ONNX file in ONNX Runtime, fed in its own static batch size."""
    from deploykit.pipeline.evaluate import fixed_batch
    from deploykit.runtimes.onnxruntime import OrtModel

    model = OrtModel(path, threads=threads)
    return fixed_batch(model.run, _static_batch(path, model))(images)


def _static_batch(path: Path, model=None) -> int:
    from deploykit.runtimes.onnxruntime import OrtModel

    dim = (model or OrtModel(path)).session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) else 1


def _record(opts: Int8Options, calib, holdout: Holdout, choice: Choice) -> dict:
    from deploykit.export.quantize import SCHEME

    return {
        "scheme": SCHEME, "calibration": calib.record(), "scored_by": holdout.note,
        "budget_points": opts.accuracy_budget,
        "requested": {"calib_method": opts.calib_method, "per_channel": opts.per_channel},
        "holdout_float_top1": holdout.float_top1, "readiness": choice.readiness.to_dict(),
        "candidates": [c.to_dict() for c in choice.candidates], "chosen": choice.best.to_dict(),
        "kept_float": choice.kept, "sensitivity": choice.ranking,
    }


def _finish(ctx, staged, float_build, holdout, record, readiness, opts) -> TargetBuild:
    from deploykit.export.onnx import count_ops
    from deploykit.runtimes.onnxruntime import OrtModel

    logits = run_onnx(staged, holdout.images, ctx.options.get("threads", 2))
    parity = compare_outputs(holdout.reference, logits, "int8")
    if not parity:
        raise ParityError(f"the int8 ONNX (ONNX Runtime, {len(holdout.images)} held-out calibration images) "
                          f"differs from the PyTorch model beyond the int8 tolerance: {parity.summary()}",
                          fix="lower --accuracy-budget, use --per-channel auto, or calibrate on more or more "
                              "representative images; nothing was written")
    record["runtimes"] = {"onnxruntime": OrtModel(staged).precision_record()}
    warnings = list(float_build.warnings) + _readiness_warnings(readiness, opts)
    warnings += resolution_warnings(len(holdout.images), opts.accuracy_budget)
    warnings += _openvino_check(staged, holdout, record, ctx.options.get("threads", 2))
    details = {**{k: v for k, v in float_build.details.items() if k not in ("op_counts", "parity_runtime")},
               "op_counts": count_ops(staged), "parity_runtime": "onnxruntime",
               "parity_probe": f"{len(holdout.images)} held-out calibration images from {opts.calib}",
               "float_parity": float_build.parity.to_dict(), "int8": record}
    return TargetBuild(precision="int8", parity=parity, details=details, warnings=warnings,
                       messages=_messages(record))


def resolution_warnings(holdout_images: int, budget: float) -> list[str]:
    """A held-out slice too small for the budget: one changed prediction then costs more than the budget,
    so the search keeps layers float over a single image (seen: 64 images -> 21 held out -> 24 layers float)."""
    from deploykit.data.calibration import HOLDOUT_FRACTION

    per_image = 100.0 / holdout_images
    if per_image <= budget:
        return []
    needed = math.ceil(math.ceil(100.0 / budget) / HOLDOUT_FRACTION) if budget > 0 else None
    fix = f"pass --calib-size {needed} or more" if needed else "a budget of 0 tolerates no changed prediction"
    return [f"the accuracy budget cannot resolve one image: {holdout_images} held-out images make one changed "
            f"prediction {per_image:.1f} points, over the budget of {budget:g}, so layers may be kept float "
            f"for a single image; {fix}"]


def _readiness_warnings(readiness, opts: Int8Options) -> list[str]:
    if readiness.per_tensor_safe:
        return []
    if opts.per_channel == "off":
        return [f"--per-channel off: {readiness.summary()}"]
    return [f"{readiness.summary()}; per-channel weights used"] if opts.per_channel == "auto" else []


def _openvino_check(staged: Path, holdout: Holdout, record: dict, threads: int) -> list[str]:
    """The same held-out comparison in OpenVINO, where installed: recorded, and a warning if it fails
    (ONNX Runtime's verdict gates the export; OpenVINO is the faster consumer of the same file)."""
    try:
        from deploykit.runtimes.openvino import OpenVINOModel
        model = OpenVINOModel(staged, threads=threads)
    except DeployKitError as exc:
        record["runtimes"]["openvino"] = {"checked": False, "reason": exc.message}
        return []
    from deploykit.pipeline.evaluate import fixed_batch

    logits = fixed_batch(model.run, _static_batch(staged))(holdout.images)
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
    lines = [f"int8: {chosen['method']} calibration, {weights} weights (best of {len(record['candidates'])} "
             f"candidates); on {record['calibration']['holdout']} held-out images {measured}, "
             f"loss {chosen['loss_points']:.2f} points (budget {record['budget_points']:g})"]
    if record["kept_float"]:
        layers = ", ".join(entry["layer"] for entry in record["kept_float"])
        lines.append(f"kept in float to fit the budget: {len(record['kept_float'])} layers ({layers})")
    for name, runtime in record["runtimes"].items():
        if "summary" in runtime:
            lines.append(f"{name} runs it as: {runtime['summary']}")
    return lines
