"""Execute a sweep plan on Ray, streaming: builds first (each device's anchor artifact before the rest),
and as each build lands, its evaluations (CPU tasks) and latency measurements (the device's actor). The
driver only reacts to finished work; what the plan marked reused is never submitted.

Library code: reports through `on_event(kind, payload)` ("cell" when a trial x device row is complete,
"tick" with counts for a progress display).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from deploykit.pipeline.sweep_plan import (BuildJob, Cell, SweepPlan, cached_record, evaluation_key, latency_batch,
                                           latency_key)
from deploykit.pipeline.sweep_ray import RayContext, start, stop
from deploykit.pipeline.sweep_work import (EvalJob, LatencyJob, ReferenceJob, build_artifact, evaluate_artifact,
                                           evaluate_reference)

OnEvent = Callable[[str, dict], None]
TICK_S = 0.5


@dataclass
class SweepOutcome:
    plan: SweepPlan
    builds: dict[str, dict] = field(default_factory=dict)  # label -> build_artifact's result
    references: dict[str, dict] = field(default_factory=dict)
    evaluations: dict[tuple[str, str], dict] = field(default_factory=dict)  # (trial, device) -> result
    latencies: dict[tuple[str, str], dict] = field(default_factory=dict)
    attempts: dict[str, list[dict]] = field(default_factory=dict)  # label -> every start (node, pid)
    nodes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    build_eval_seconds: float = 0.0  # until the last build, reference or evaluation finished
    submitted: list[str] = field(default_factory=list)  # what ran (labels); the rest came from the cache

    def retried(self) -> dict[str, list[dict]]:
        """label -> its starts, for the work that ran more than once (Ray's attempt number says so even
        when the attempt that died never got to report)."""
        return {label: starts for label, starts in self.attempts.items() if retries(starts)}


def retries(starts: list[dict]) -> int:
    """How many times the work was retried: Ray's highest attempt number, or the extra starts seen."""
    highest = max((s.get("attempt") or 0 for s in starts), default=0)
    return max(highest, len(starts) - 1)


def run_sweep(plan: SweepPlan, *, address: str | None = None, workers: int | None = None,
              on_event: OnEvent | None = None) -> SweepOutcome:
    ctx = start(plan.devices, address=address, workers=workers)
    try:
        return _Scheduler(plan, ctx, on_event or (lambda kind, payload: None)).run()
    finally:
        stop(ctx)


class _Scheduler:
    def __init__(self, plan: SweepPlan, ctx: RayContext, on_event: OnEvent) -> None:
        self.plan, self.ctx, self.on_event = plan, ctx, on_event
        self.out = SweepOutcome(plan, nodes=ctx.nodes())
        self.pending: dict = {}  # ObjectRef -> (kind, label or cell key)
        self.reference_refs: dict[str, object] = {}
        self.waiting: dict[str, list[Cell]] = {d: [] for d in plan.devices}  # measurements waiting for anchors
        self.failed = 0
        self.start = time.perf_counter()

    def run(self) -> SweepOutcome:
        for reference in self.plan.references.values():
            if not reference.reused:
                self._submit_reference(reference)
        for job in self._build_order():
            if job.reused:
                cached = job.step.cached
                self._built(job, {"ok": True, "artifact": str(cached.artifact), "sha256": cached.sha256,
                                  "built": False, "precision": cached.manifest.precision,
                                  "size_bytes": cached.manifest.size_bytes, "reused": True})
            else:
                self._submit(self.ctx.task, ("build", job.label), build_artifact, job.label, job.plan)
        while self.pending:
            ready, _ = self.ctx.ray.wait(list(self.pending), num_returns=1, timeout=TICK_S)
            for ref in ready:
                self._handle(ref)
            self._tick()
        self.out.seconds = time.perf_counter() - self.start
        self.out.attempts = self.ctx.ray.get(self.ctx.tracker.snapshot.remote())
        return self.out

    def _build_order(self) -> list[BuildJob]:
        anchors = [self.plan.builds[a] for a in dict.fromkeys(self.plan.anchors.values()) if a]
        return anchors + [b for b in self.plan.builds.values() if b not in anchors]

    # --- submitting -------------------------------------------------------------------------------

    def _submit(self, remote, what: tuple, fn, label: str, job, after=None):
        """A task (`fn` run by the tracked wrapper) or an actor method (`fn` None); returns its ObjectRef."""
        if fn is not None:  # named: `ps` shows each worker's task as "ray::LABEL"
            ref = remote.options(name=label).remote(fn, label, self.ctx.tracker, job, after)
        else:
            ref = remote.remote(label, job, after)
        self.pending[ref] = what
        self.out.submitted.append(label)
        return ref

    def _submit_reference(self, reference) -> None:
        job = ReferenceJob(reference.key, reference.model, Path(reference.weights), reference.input_size,
                           reference.num_classes, self.plan.data, self.plan.cache.root)
        self.reference_refs[reference.key] = self._submit(self.ctx.task, ("reference", reference.key),
                                                          evaluate_reference, reference_label(reference), job)

    def _submit_cell(self, cell: Cell, build: dict) -> None:
        key = evaluation_key(self.plan, build["sha256"], cell.device, cell.reference)
        if cached_record(self.plan.cache, key) is not None:
            self.out.evaluations[(cell.trial, cell.device)] = {"ok": True, **cached_record(self.plan.cache, key),
                                                              "reused": True}
        else:
            device = self.plan.devices[cell.device]
            job = EvalJob(f"eval:{cell.trial}@{cell.device}", Path(build["artifact"]), device, key, cell.reference,
                          self.plan.data, self.plan.cache.root)
            after = self.reference_refs.get(cell.reference)
            if device.is_local:
                self._submit(self.ctx.task, ("eval", cell), evaluate_artifact, job.label, job, after)
            else:
                self._submit(self.ctx.actor_for(device).evaluate, ("eval", cell), None, job.label, job, after)
        self._measure_when_anchored(cell)

    def _measure_when_anchored(self, cell: Cell) -> None:
        anchor = self.plan.anchors.get(cell.device)
        if anchor is not None and anchor not in self.out.builds:
            self.waiting[cell.device].append(cell)
            return
        build = self.out.builds[cell.build]
        anchor_build = self.out.builds.get(anchor) if anchor else None
        anchor_ok = anchor_build is not None and anchor_build["ok"]
        key = latency_key(self.plan, build["sha256"], anchor_build["sha256"] if anchor_ok else None, cell.device)
        cached = cached_record(self.plan.cache, key)
        if cached is not None:
            self.out.latencies[(cell.trial, cell.device)] = {"ok": True, **cached, "reused": True}
            self._maybe_done(cell)
            return
        device = self.plan.devices[cell.device]
        profile = self.plan.spec.profile
        job = LatencyJob(f"latency:{cell.trial}@{cell.device}", Path(build["artifact"]),
                         Path(anchor_build["artifact"]) if anchor_ok else None, device, key,
                         latency_batch(self.plan, cell.device), profile.runs, profile.warmup, self.plan.cache.root)
        self._submit(self.ctx.actor_for(device).measure, ("latency", cell), None, job.label, job)

    # --- results ----------------------------------------------------------------------------------

    def _handle(self, ref) -> None:
        kind, what = self.pending.pop(ref)
        try:
            result = self.ctx.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - a task that failed every retry, or an actor that is gone
            result = {"ok": False, "reason": f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}"}
        self.failed += not result.get("ok", False)
        if kind == "build":
            self._built(self.plan.builds[what], result)
        elif kind == "reference":
            self.out.references[what] = result
            self._mark_build_eval()
        elif kind == "eval":
            self.out.evaluations[(what.trial, what.device)] = result
            self._mark_build_eval()
            self._maybe_done(what)
        else:
            self.out.latencies[(what.trial, what.device)] = result
            self._maybe_done(what)

    def _built(self, job: BuildJob, result: dict) -> None:
        self.out.builds[job.label] = result
        self._mark_build_eval()
        for cell in self.plan.cells:
            if cell.build == job.label:
                if result["ok"]:
                    self._submit_cell(cell, result)
                else:
                    self._maybe_done(cell)
        for device, anchor in self.plan.anchors.items():
            if anchor == job.label:
                waiting, self.waiting[device] = self.waiting[device], []
                for cell in waiting:
                    self._measure_when_anchored(cell)

    def _mark_build_eval(self) -> None:
        self.out.build_eval_seconds = time.perf_counter() - self.start

    def _maybe_done(self, cell: Cell) -> None:
        key = (cell.trial, cell.device)
        build = self.out.builds.get(cell.build, {})
        if build.get("ok") and (key not in self.out.evaluations or key not in self.out.latencies):
            return
        self.on_event("cell", {"cell": cell, "build": build, "evaluation": self.out.evaluations.get(key),
                               "latency": self.out.latencies.get(key)})

    def _tick(self) -> None:
        try:
            starts = self.ctx.ray.get(self.ctx.tracker.snapshot.remote(), timeout=5)
        except Exception:  # noqa: BLE001 - a slow tracker only delays the display
            return
        running = [label for label in starts if label in self._pending_labels()]
        self.on_event("tick", {"running": running, "pending": len(self.pending), "failed": self.failed,
                               "retried": sorted(k for k, v in starts.items() if retries(v)),
                               "elapsed": time.perf_counter() - self.start})

    def _pending_labels(self) -> set[str]:
        labels = set()
        for kind, what in self.pending.values():
            if kind == "build":
                labels.add(what)
            elif kind == "eval":
                labels.add(f"eval:{what.trial}@{what.device}")
            elif kind == "latency":
                labels.add(f"latency:{what.trial}@{what.device}")
            else:
                labels.add(reference_label(self.plan.references[what]))
        return labels


def reference_label(reference) -> str:
    return f"float:{reference.model}" + (f"@{reference.input_size}" if reference.input_size else "")
