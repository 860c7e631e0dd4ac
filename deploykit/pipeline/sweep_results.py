"""A sweep's results: one row per trial x device, judged against the spec's thresholds, with the
accuracy-vs-latency Pareto front of each device marked.

Latency on a shared machine moves with its load, so every trial was timed in alternating blocks beside
the device's anchor artifact (`sweep_plan`): `vs_anchor` is that ratio, and `latency_ms`, the figure
the front is drawn on, is the ratio times the anchor's median p50 over the device's rows. `p50_ms` is
the raw median of the trial's own measurement.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, fields

from deploykit.pipeline.check import Measurement, judge
from deploykit.pipeline.sweep_plan import Cell, cached_record
from deploykit.pipeline.sweep_run import SweepOutcome, reference_label, retries
from deploykit.profile.report_html import Point, pareto

OK, FAILED, INVALID, SKIPPED = "ok", "failed", "invalid", "skipped"


@dataclass
class SweepRow:
    trial: str
    device: str
    model: str
    input_size: int | None
    prune: float
    precision: str
    target: str
    status: str = OK
    reason: str = ""
    top1: float | None = None
    top5: float | None = None
    n: int = 0
    reference_top1: float | None = None
    top1_drop: float | None = None
    agreement: float | None = None
    sqnr_db: float | None = None
    latency_ms: float | None = None  # anchored (see the module docstring): the front's x
    p50_ms: float | None = None
    anchor_p50_ms: float | None = None
    vs_anchor: float | None = None
    spread: float | None = None
    load_average: float | None = None
    macs: int | None = None
    params: int | None = None
    size_bytes: int | None = None
    precision_used: str = ""
    layout_runtime: str | None = None
    artifact: str | None = None
    artifact_sha256: str | None = None
    pareto: bool = False
    build_node: str | None = None
    eval_node: str | None = None
    latency_node: str | None = None
    reused: str = ""  # which of build, evaluation, latency came from the cache
    attempts: int = 0  # retries of its tasks (after a worker died)

    def to_dict(self) -> dict:
        return asdict(self)


def collect(outcome: SweepOutcome) -> list[SweepRow]:
    plan = outcome.plan
    trials = {t.name: t for t in plan.trials}
    rows = [_row(outcome, cell, trials[cell.trial]) for cell in plan.cells]
    _anchor_latency(rows)
    _judge(outcome, rows)
    mark_fronts(rows)
    return rows


def _row(outcome: SweepOutcome, cell: Cell, trial) -> SweepRow:
    row = SweepRow(cell.trial, cell.device, **{k: v for k, v in trial.values().items()})
    if cell.skip is not None:
        row.status = INVALID if cell.skip.startswith("invalid") else SKIPPED
        row.reason = cell.skip
        return row
    build = outcome.builds.get(cell.build) or {"ok": False, "reason": "not built (the sweep stopped)"}
    evaluation = outcome.evaluations.get((cell.trial, cell.device)) or {}
    latency = outcome.latencies.get((cell.trial, cell.device)) or {}
    reference = outcome.references.get(cell.reference) or _cached(outcome, cell.reference)
    _fill_build(row, build)
    _fill_evaluation(row, evaluation, reference)
    _fill_latency(row, latency)
    row.reused = ",".join(name for name, r in (("build", build), ("evaluation", evaluation), ("latency", latency))
                          if r.get("reused") or r.get("computed") is False or r.get("built") is False)
    labels = [cell.build, f"eval:{cell.trial}@{cell.device}", f"latency:{cell.trial}@{cell.device}"]
    row.attempts = sum(retries(outcome.attempts.get(label, [])) for label in labels)
    failures = [r["reason"] for r in (build, evaluation, latency) if r and not r.get("ok", True)]
    if failures or not build.get("ok"):
        row.status, row.reason = FAILED, "; ".join(failures) or build.get("reason", "")
    return row


def _cached(outcome: SweepOutcome, key: str | None) -> dict:
    value = cached_record(outcome.plan.cache, key) if key else None
    return value or {}


def _fill_build(row: SweepRow, build: dict) -> None:
    row.artifact, row.artifact_sha256 = build.get("artifact"), build.get("sha256")
    row.size_bytes, row.layout_runtime = build.get("size_bytes"), build.get("layout_runtime")
    row.build_node = build.get("node_id")


def _fill_evaluation(row: SweepRow, evaluation: dict, reference: dict) -> None:
    for name in ("top1", "top5", "agreement", "sqnr_db", "macs", "params"):
        setattr(row, name, evaluation.get(name))
    row.n, row.precision_used = evaluation.get("n", 0), evaluation.get("precision_used", "")
    row.eval_node = evaluation.get("node_id")
    row.reference_top1 = reference.get("top1")
    if row.top1 is not None and row.reference_top1 is not None:
        row.top1_drop = row.reference_top1 - row.top1


def _fill_latency(row: SweepRow, latency: dict) -> None:
    for name in ("p50_ms", "anchor_p50_ms", "vs_anchor", "spread", "load_average"):
        setattr(row, name, latency.get(name))
    row.latency_node = latency.get("node_id")


def _anchor_latency(rows: list[SweepRow]) -> None:
    """latency_ms: the ratio to the anchor times the anchor's median p50 on that device (p50 without one)."""
    for device in dict.fromkeys(r.device for r in rows):
        mine = [r for r in rows if r.device == device and r.p50_ms is not None]
        anchors = [r.anchor_p50_ms for r in mine if r.anchor_p50_ms is not None]
        scale = statistics.median(anchors) if anchors else None
        for row in mine:
            row.latency_ms = row.vs_anchor * scale if row.vs_anchor is not None and scale else row.p50_ms


def _judge(outcome: SweepOutcome, rows: list[SweepRow]) -> None:
    """The spec's thresholds, through the recipe checker: a trial that misses one has failed, saying which."""
    recipes = {job.trial: job.plan.recipe for job in outcome.plan.builds.values()}
    for row in rows:
        if row.status != OK or row.trial not in recipes:
            continue
        measurement = Measurement(stage=row.trial, device=row.device, top1=row.top1, top5=row.top5, n=row.n,
                                  agreement=row.agreement, sqnr_db=row.sqnr_db, latency_ms=row.p50_ms,
                                  reference_top1=row.reference_top1)
        missed = [c.message for c in judge(recipes[row.trial], row.reference_top1, [measurement])
                  if c.status == "failed"]
        if missed:
            row.status, row.reason = FAILED, "thresholds: " + "; ".join(missed)


def mark_fronts(rows: list[SweepRow]) -> None:
    """Per device, the rows no other row beats on both accuracy and latency (failed rows take no part)."""
    for device in dict.fromkeys(r.device for r in rows):
        mine = [r for r in rows if r.device == device and r.status == OK and r.latency_ms is not None
                and r.top1 is not None]
        front = {p.name for p in pareto([Point(r.trial, r.latency_ms, r.top1) for r in mine]) if p.frontier}
        for row in mine:
            row.pareto = row.trial in front


def fronts(rows: list[SweepRow]) -> dict[str, list[SweepRow]]:
    """device -> its front, fastest first."""
    out: dict[str, list[SweepRow]] = {}
    for row in rows:
        out.setdefault(row.device, [])
        if row.pareto:
            out[row.device].append(row)
    return {d: sorted(front, key=lambda r: r.latency_ms) for d, front in out.items()}


def summary(outcome: SweepOutcome, rows: list[SweepRow]) -> dict:
    counts = {status: sum(r.status == status for r in rows) for status in (OK, FAILED, INVALID, SKIPPED)}
    return {"trials": len(outcome.plan.trials), "rows": len(rows), **counts,
            "seconds": round(outcome.seconds, 2), "build_eval_seconds": round(outcome.build_eval_seconds, 2),
            "ran": len(outcome.submitted), "nodes": outcome.nodes,
            "retried": {label: starts for label, starts in outcome.retried().items()},
            "references": {reference_label(r): outcome.references.get(r.key, {}).get("top1") or
                           _cached(outcome, r.key).get("top1") for r in outcome.plan.references.values()}}


ROW_FIELDS = [f.name for f in fields(SweepRow)]
