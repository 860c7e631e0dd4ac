"""A sweep as a plan: every artifact (a one-stage recipe plan with its full cache key), every float
reference, and every trial x device cell with the keys of its evaluation and its latency measurement,
each marked reused when the cache holds it. `deploykit sweep --dry-run` prints it; a killed sweep rerun
shows its finished work as reused here, and the run then submits only the rest.

Keys (full sha256 of canonical JSON, like `pipeline.plan`):
- artifact: the recipe plan's own key (model, weights, passes, target, options, tools, source);
- reference: the float training form's logits on the evaluation images (model, weights, input size, data);
- evaluation: the artifact's sha256, the device, the data and the reference;
- latency: the artifact's sha256, the device's anchor artifact's sha256, the device and the profile settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deploykit.core.devices import Device
from deploykit.core.digest import sha256_json
from deploykit.core.errors import DeployKitError
from deploykit.core.sweep import SweepSpec
from deploykit.pipeline.cache import PipelineCache
from deploykit.pipeline.plan import Plan, make_plan, tool_fingerprint
from deploykit.pipeline.sweep_spec import Trial, expand, layouts, sweep_devices, trial_recipe

FORMAT = 1  # bump when the meaning of a cached sweep record changes


@dataclass(frozen=True)
class EvalData:
    """The evaluation images: a folder (by content hash), a seeded subset, and what is left out."""

    path: Path
    sha256: str
    limit: int | None
    exclude: dict | None  # the calibration record whose pool is left out (data.exclude_calib)

    def key(self) -> dict:
        excluded = None if self.exclude is None else self.exclude["excluded_sha256"]
        return {"sha256": self.sha256, "limit": self.limit, "excluded_sha256": excluded}


@dataclass(frozen=True)
class BuildJob:
    """One artifact: a trial (float), or a trial laid out for one runtime (int8, made for `layout`)."""

    label: str
    trial: str
    layout: str | None
    devices: tuple[str, ...]
    plan: Plan

    @property
    def step(self):
        return self.plan.artifacts[0]

    @property
    def reused(self) -> bool:
        return self.step.reused


@dataclass(frozen=True)
class Reference:
    key: str
    model: str
    weights: Path
    input_size: int | None
    num_classes: int | None
    reused: bool


@dataclass(frozen=True)
class Cell:
    """One trial on one device: one row of the results."""

    trial: str
    device: str
    build: str | None = None  # BuildJob label
    reference: str | None = None  # Reference key
    skip: str | None = None  # why it does not run (an invalid combination, a device that cannot run it)
    eval_key: str | None = None  # None until the artifact exists
    eval_reused: bool = False
    measure_key: str | None = None
    measure_reused: bool = False


@dataclass
class SweepPlan:
    spec: SweepSpec
    spec_path: Path
    cache: PipelineCache
    tools: dict
    devices: dict[str, Device]
    data: EvalData
    trials: list[Trial]
    builds: dict[str, BuildJob] = field(default_factory=dict)
    references: dict[str, Reference] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    anchors: dict[str, str | None] = field(default_factory=dict)  # device -> the BuildJob timed beside all

    def counts(self) -> dict:
        todo = [c for c in self.cells if c.skip is None]
        return {"trials": len(self.trials), "cells": len(self.cells), "skipped": len(self.cells) - len(todo),
                "builds": len(self.builds), "builds_reused": sum(b.reused for b in self.builds.values()),
                "evaluations_reused": sum(c.eval_reused for c in todo),
                "measurements_reused": sum(c.measure_reused for c in todo), "runnable": len(todo),
                "references": len(self.references),
                "references_reused": sum(r.reused for r in self.references.values())}

    def to_dict(self) -> dict:
        return {"spec": str(self.spec_path), "name": self.spec.name, "cache": str(self.cache.root),
                "data": {"path": str(self.data.path), **self.data.key()}, "tools": self.tools,
                "counts": self.counts(), "anchors": self.anchors,
                "builds": [{"label": b.label, "trial": b.trial, "layout_for": b.layout, "devices": list(b.devices),
                            "key": b.step.key, "reused": b.reused} for b in self.builds.values()],
                "references": [{"key": r.key, "model": r.model, "input_size": r.input_size, "reused": r.reused}
                               for r in self.references.values()],
                "cells": [c.__dict__ for c in self.cells]}


def make_sweep_plan(spec: SweepSpec, spec_path: Path, cache: PipelineCache) -> SweepPlan:
    devices = sweep_devices(spec)
    plan = SweepPlan(spec, Path(spec_path), cache, tool_fingerprint(), devices, eval_data(spec, cache),
                     expand(spec))
    for trial in plan.trials:
        try:
            jobs = _trial_builds(plan, trial)
        except DeployKitError as exc:  # an invalid combination: reported in its rows, the rest runs
            plan.cells += [Cell(trial.name, d, skip=f"invalid combination: {exc.message}") for d in devices]
            continue
        plan.builds.update({job.label: job for job in jobs})
        plan.cells += _cells(plan, trial, jobs)
    plan.anchors = {d: _anchor(plan, d) for d in devices}
    plan.cells = [_with_keys(plan, cell) for cell in plan.cells]
    return plan


def eval_data(spec: SweepSpec, cache: PipelineCache) -> EvalData:
    exclude = None
    if spec.data.exclude_calib:
        from deploykit.data.calibration import CalibrationConfig, open_calibration

        if spec.data.calib is None or Path(spec.data.calib).resolve() != Path(spec.data.eval).resolve():
            raise DeployKitError("data.exclude_calib: the calibration images come from another folder than "
                                 "the evaluation images, so there is nothing to leave out",
                                 fix="drop exclude_calib, or calibrate on the evaluation folder with int8.calib_split")
        config = CalibrationConfig(spec.data.calib, size=spec.int8.get("calib_size"), split=spec.int8["calib_split"])
        exclude = open_calibration(config).record()
    return EvalData(Path(spec.data.eval), cache.digest(spec.data.eval), spec.data.limit, exclude)


# --- artifacts ------------------------------------------------------------------------------------

def _trial_builds(plan: SweepPlan, trial: Trial) -> list[BuildJob]:
    jobs = []
    for layout, devices in layouts(trial, plan.devices).items():
        recipe = trial_recipe(plan.spec, trial, layout)
        label = trial.name if layout is None else f"{trial.name}@{plan.devices[layout].runtime}"
        jobs.append(BuildJob(label, trial.name, layout, tuple(devices), make_plan(recipe, plan.spec_path, plan.cache)))
    return jobs


def _cells(plan: SweepPlan, trial: Trial, jobs: list[BuildJob]) -> list[Cell]:
    by_device = {d: job for job in jobs for d in job.devices}
    cells = []
    for name, device in plan.devices.items():
        job = by_device.get(name)
        if job is None:
            why = f"{name} runs {device.runtime}, which does not run {trial.target} artifacts"
            cells.append(Cell(trial.name, name, skip=why))
            continue
        reference = _reference(plan, job)
        plan.references.setdefault(reference.key, reference)
        cells.append(Cell(trial.name, name, build=job.label, reference=reference.key))
    return cells


def _reference(plan: SweepPlan, job: BuildJob) -> Reference:
    recipe = job.plan.recipe
    key = sha256_json({"what": "sweep-reference", "format": FORMAT, "model": recipe.model,
                       "num_classes": recipe.num_classes, "input_size": recipe.input_size,
                       "weights_sha256": job.plan.weights_sha256, "data": plan.data.key(), "tools": plan.tools})
    return Reference(key, recipe.model, job.plan.weights, recipe.input_size, recipe.num_classes,
                     cached_record(plan.cache, key) is not None)


def _anchor(plan: SweepPlan, device: str) -> str | None:
    """The first artifact (in trial order) measured on `device`: every latency there is timed beside it."""
    return next((c.build for c in plan.cells if c.device == device and c.build is not None), None)


# --- keys -----------------------------------------------------------------------------------------

def _with_keys(plan: SweepPlan, cell: Cell) -> Cell:
    job = plan.builds.get(cell.build) if cell.build else None
    if job is None or job.step.cached is None:
        return cell
    eval_key = evaluation_key(plan, job.step.cached.sha256, cell.device, cell.reference)
    anchor = plan.builds.get(plan.anchors.get(cell.device) or "")
    anchor_sha = anchor.step.cached.sha256 if anchor is not None and anchor.step.cached is not None else None
    measure_key = latency_key(plan, job.step.cached.sha256, anchor_sha, cell.device) \
        if anchor_sha is not None else None
    return Cell(**{**cell.__dict__, "eval_key": eval_key,
                   "eval_reused": cached_record(plan.cache, eval_key) is not None, "measure_key": measure_key,
                   "measure_reused": measure_key is not None and cached_record(plan.cache, measure_key) is not None})


def evaluation_key(plan: SweepPlan, artifact_sha: str, device: str, reference_key: str) -> str:
    spec = plan.devices[device].to_dict()
    return sha256_json({"what": "sweep-evaluation", "format": FORMAT, "artifact_sha256": artifact_sha,
                        "device": {k: spec[k] for k in ("runtime", "precision", "compute_units", "location",
                                                         "agent", "name")},
                        "data": plan.data.key(), "reference": reference_key, "tools": plan.tools})


def latency_key(plan: SweepPlan, artifact_sha: str, anchor_sha: str | None, device: str) -> str:
    profile = plan.spec.profile
    return sha256_json({"what": "sweep-latency", "format": FORMAT, "artifact_sha256": artifact_sha,
                        "anchor_sha256": anchor_sha, "device": plan.devices[device].to_dict(),
                        "profile": {"runs": profile.runs, "warmup": profile.warmup, "batch": latency_batch(plan, device)},
                        "tools": plan.tools})


def latency_batch(plan: SweepPlan, device: str) -> int:
    return (plan.spec.profile.batches or plan.devices[device].batches)[0]


__all__ = ["BuildJob", "Cell", "EvalData", "Reference", "SweepPlan", "evaluation_key", "latency_key",
           "make_sweep_plan"]


def cached_record(cache: PipelineCache, key: str) -> dict | None:
    """A sweep's cached evaluation or latency record (None when absent or damaged: then it is redone)."""
    return cache.measurement(key, is_sweep_record)


def is_sweep_record(data: object) -> bool:
    """Every record a sweep stores names where it was made and holds a top-1 or a p50, as a number."""
    if not isinstance(data, dict) or "node_id" not in data:
        return False
    number = (int, float)
    return any(isinstance(data.get(k), number) and not isinstance(data.get(k), bool) for k in ("top1", "p50_ms"))
