"""Execute a plan: build (or reuse) each stage's artifact through the export pipeline, then profile
(or reuse) each stage on each device through the profile API. Library code: reports by callback.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from deploykit.core.errors import DeployKitError
from deploykit.core.recipe import FLOAT_STAGE
from deploykit.pipeline.cache import CachedArtifact
from deploykit.pipeline.check import Measurement
from deploykit.pipeline.plan import ArtifactStep, MeasureStep, Plan, measure_key, reusable
from deploykit.pipeline.recipe import PRUNE_PASS, REQUEST_OPTIONS

Say = Callable[[str], None]


@dataclass
class RunResult:
    plan: Plan
    artifacts: dict[str, CachedArtifact] = field(default_factory=dict)
    build_errors: dict[str, str] = field(default_factory=dict)  # stage -> why its export failed
    reference: Measurement | None = None  # the float training form
    measurements: list[Measurement] = field(default_factory=list)
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)  # (stage, device) -> why
    built: list[str] = field(default_factory=list)  # what ran (not reused): "folded", "folded@host-cpu-ort"
    reused: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_plan(plan: Plan, *, keep_going: bool = False, say: Say | None = None) -> RunResult:
    """`keep_going`: an export that fails its parity check is recorded against its stage (for `check`)
    instead of stopping the run; bad input still stops it."""
    say = say or (lambda _: None)
    start = time.perf_counter()
    result = RunResult(plan)
    for step in plan.artifacts:
        _build(step, plan, result, keep_going, say)
    _measure_all(plan, result, say)
    result.seconds = time.perf_counter() - start
    return result


# --- artifacts ------------------------------------------------------------------------------------

def _build(step: ArtifactStep, plan: Plan, result: RunResult, keep_going: bool, say: Say) -> None:
    if step.cached is not None:
        result.artifacts[step.stage] = step.cached
        result.reused.append(step.stage)
        return
    say(f"building {step.stage} ({step.target})…")
    try:
        cached = plan.cache.build_artifact(step.key, step.inputs, lambda out: _export(step, plan, out))
    except DeployKitError as exc:
        if not keep_going or exc.exit_code != 1:  # a parity failure is the stage's result; the rest is input
            raise DeployKitError(f"stage {step.stage}: {exc.message}", fix=exc.fix,
                                 exit_code=exc.exit_code) from exc
        result.build_errors[step.stage] = exc.message
        say(f"{step.stage}: export failed: {exc.message}")
        return
    result.artifacts[step.stage] = cached
    result.built.append(step.stage)


def _export(step: ArtifactStep, plan: Plan, out_dir: Path) -> Path:
    from deploykit.pipeline.export import export

    return export(export_request(step, plan, out_dir)).artifact


def export_request(step: ArtifactStep, plan: Plan, out_dir: Path):
    """The stage as an `ExportRequest` (the export pipeline's own input): `prune_channels` becomes its
    `prune` (run first, on the training form, fine-tuned with the stage's finetune_* options), the other
    passes its `passes`."""
    from deploykit.pipeline.export import ExportRequest

    recipe = plan.recipe
    options = {k: v for k, v in step.options.items() if k not in REQUEST_OPTIONS}
    passes = tuple((p.name, p.config) for p in step.passes if p.name != PRUNE_PASS)
    prune = next((p for p in step.passes if p.name == PRUNE_PASS), None)
    return ExportRequest(model=recipe.model, target=step.target, weights=plan.weights, out_dir=out_dir,
                         input_size=recipe.input_size, batch=step.batch, num_classes=recipe.num_classes,
                         options=options, passes=passes,
                         prune=None if prune is None else _prune_request(prune.config, step.options))


def _prune_request(config, options: dict):
    from deploykit.pipeline.prune_chain import PruneRequest
    from deploykit.training import TrainConfig

    train = TrainConfig(epochs=int(options.get("finetune_epochs", 3)),
                        lr=float(options.get("finetune_lr", 0.02)))
    return PruneRequest(config, finetune_data=options.get("finetune_data"), finetune=train,
                        threads=int(options.get("threads", 2)))


# --- measurements ---------------------------------------------------------------------------------

def _measure_all(plan: Plan, result: RunResult, say: Say) -> None:
    todo: dict[str, list[tuple[MeasureStep, CachedArtifact, str, dict | None]]] = {}
    for step in plan.measures:
        artifact = result.artifacts.get(step.stage)
        if step.skip is not None:
            result.skipped[(step.stage, step.device)] = step.skip
            continue
        if artifact is None:
            result.skipped[(step.stage, step.device)] = "no artifact (its export failed)"
            continue
        key = step.key or measure_key(plan.recipe, artifact.sha256, plan.devices[step.device],
                                      plan.data_sha256, plan.reference.key, plan.tools)
        cached = plan.cache.measurement(key)
        if reusable(cached):
            result.measurements.append(Measurement(**cached["measurement"]))
            result.reused.append(f"{step.stage}@{step.device}")
        else:
            todo.setdefault(step.device, []).append((step, artifact, key, cached))
    for device, items in todo.items():
        _measure_device(plan, device, items, result, say)
    result.reference = _reference(plan)
    order = {(s.stage, s.device): i for i, s in enumerate(plan.measures)}
    result.measurements.sort(key=lambda m: order.get((m.stage, m.device), 0))


def _measure_device(plan: Plan, device: str, items: list, result: RunResult, say: Say) -> None:
    """Measure what has no cached record in full; only time again what has one with an unstable latency
    (accuracy on the recipe's images is the same on every run: evaluating it again cost 17.9 s of the
    resnet56_cifar recipe's rerun). Every record is cached; an unstable one is timed again next run."""
    fresh = [item for item in items if item[3] is None]
    retime = [item for item in items if item[3] is not None]
    for group, latency_only in ((fresh, False), (retime, True)):
        if not group:
            continue
        what = "timing again" if latency_only else "profiling"
        say(f"{what} {', '.join(s.stage for s, _, _, _ in group)} on {device}…")
        for (measurement, key), (_, _, _, cached) in zip(_profile_device(plan, device, group, say, latency_only),
                                                         group):
            if latency_only:
                measurement = merge_latency(Measurement(**cached["measurement"]), measurement)
            plan.cache.store_measurement(key, {"measurement": measurement.to_dict()})
            result.measurements.append(measurement)
            result.built.append(f"{measurement.stage}@{device}")


def merge_latency(cached: Measurement, timed: Measurement) -> Measurement:
    """`cached`'s accuracy with `timed`'s latency (and its note on the latency, in place of the old one)."""
    notes = [n for n in cached.note.split("; ") if n and "latency unstable" not in n]
    notes += [n for n in timed.note.split("; ") if "latency unstable" in n]
    return replace(cached, latency_ms=timed.latency_ms, latency_batch=timed.latency_batch,
                   latency_unstable=timed.latency_unstable, latency_spread=timed.latency_spread,
                   note="; ".join(notes))


def _reference(plan: Plan) -> Measurement | None:
    cached = plan.cache.measurement(plan.reference.key)
    return Measurement(**cached["measurement"]) if cached else None


def _profile_device(plan: Plan, device_name: str, items: list, say: Say, latency_only: bool = False):
    """Profile the artifacts of `items` on one device in one call (interleaved latency, shared inputs);
    yields (measurement, its cache key). The float original's row becomes the reference measurement.
    `latency_only`: no evaluation images (the caller keeps the cached accuracy)."""
    from deploykit.pipeline.profile import profile_artifacts
    from deploykit.profile.results import FLOAT_ORIGINAL

    device, recipe = plan.devices[device_name], plan.recipe
    batches = list(recipe.profile.batches or device.batches)
    report = profile_artifacts([item[1].artifact for item in items], device,
                               data=None if latency_only else recipe.data.eval,
                               limit=recipe.data.limit, batches=batches, runs=recipe.profile.runs,
                               warmup=recipe.profile.warmup,
                               progress=lambda what, n, total: say(f"{device_name}: {what} {n}/{total}"))
    rows = {Path(row.path).resolve(): row for row in report.rows if row.path}
    floats = {row.name: row for row in report.rows if row.role == FLOAT_ORIGINAL}
    for item in items:
        step, artifact, key = item[:3]
        row = rows[artifact.artifact.resolve()]
        reference = floats.get(row.reference)
        if reference is not None:
            _store_reference(plan, _measurement(FLOAT_STAGE, reference, batches[0]), latency_only)
        yield _measurement(step.stage, row, batches[0], reference), key


def _store_reference(plan: Plan, float_row: Measurement, latency_only: bool) -> None:
    """Cache the float original's row unless a reusable one is there; a latency-only row only completes a
    cached one (it has no accuracy of its own)."""
    cached = plan.cache.measurement(plan.reference.key)
    if reusable(cached) or (latency_only and cached is None):
        return
    if latency_only:
        float_row = merge_latency(Measurement(**cached["measurement"]), float_row)
    plan.cache.store_measurement(plan.reference.key, {"measurement": float_row.to_dict()})


def _measurement(stage: str, row, batch: int, reference=None) -> Measurement:
    from deploykit.pipeline.profile_measure import latency_is_unstable

    quality, latency = row.quality, row.latency_at(batch)
    notes = list(row.notes) + ([latency.note] if latency is not None and latency.note else [])
    return Measurement(
        stage=stage, device=row.device, top1=quality.top1 if quality else None,
        top5=quality.top5 if quality else None, n=quality.n if quality else 0,
        agreement=quality.agreement if quality else None, sqnr_db=quality.sqnr_db if quality else None,
        latency_ms=latency.p50_ms if latency else None, latency_batch=batch,
        reference_top1=reference.quality.top1 if reference is not None and reference.quality else None,
        precision_used=row.precision_used, note="; ".join(notes),
        latency_unstable=latency is not None and latency_is_unstable(latency.spread),
        latency_spread=latency.spread if latency is not None else None)


__all__ = ["RunResult", "export_request", "run_plan"]
