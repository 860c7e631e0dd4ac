"""`deploykit sweep`: every combination of a spec's axes built, evaluated and timed on Ray, with a
Pareto front per device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from deploykit.cli.app import command, console
from deploykit.cli.options import CACHE_HELP

ADDRESS_HELP = "join a running Ray cluster (`auto`, or HOST:PORT of `ray start --head`) instead of starting Ray here"


@command
def sweep(
    spec: Path = typer.Argument(..., help="sweep YAML (see recipes/sweeps/)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan (trials, keys, what is reused), stop"),
    cache: Optional[Path] = typer.Option(None, help=CACHE_HELP),
    out: Optional[Path] = typer.Option(None, help="results folder (default: sweep-NAME/ here)"),
    address: Optional[str] = typer.Option(None, help=ADDRESS_HELP),
    workers: Optional[int] = typer.Option(None, help="CPUs of the in-process Ray (default: all)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the plan as JSON"),
) -> None:
    """Build, evaluate and time every trial of SPEC (reusing the cache); write the results and the fronts."""
    plan = _plan(spec, cache)
    print_plan(plan)
    if json_out is not None:
        from deploykit.core.fsutil import write_text_atomic

        write_text_atomic(json_out, json.dumps({"plan": plan.to_dict()}, indent=2, default=str) + "\n")
    if dry_run:
        return
    outcome = _execute(plan, address, workers)
    _report(outcome, out or Path(f"sweep-{plan.spec.name}"))


def _plan(spec: Path, cache: Optional[Path]):
    from deploykit.core.paths import pipeline_cache_dir
    from deploykit.pipeline.cache import PipelineCache
    from deploykit.pipeline.sweep_plan import make_sweep_plan
    from deploykit.pipeline.sweep_spec import load_sweep

    loaded = load_sweep(spec)
    with console.status("hashing inputs, planning trials…"):
        return make_sweep_plan(loaded, spec, PipelineCache(pipeline_cache_dir(cache)))


def print_plan(plan) -> None:
    c = plan.counts()
    _line(f"[bold]sweep[/] {escape(str(plan.spec_path))}: {c['trials']} trials x {len(plan.devices)} devices = "
          f"{c['cells']} rows ({c['skipped']} not run), {c['builds']} artifacts")
    _line(f"  data {escape(str(plan.data.path))} (sha256 {plan.data.sha256})"
          + (", calibration pool excluded" if plan.data.exclude else ""))
    _line(f"  cache {escape(str(plan.cache.root))}; anchors: "
          + ", ".join(f"{d}: {a or 'none'}" for d, a in plan.anchors.items()))
    _line(f"  reused from the cache: {c['builds_reused']}/{c['builds']} builds, {c['references_reused']}/"
          f"{c['references']} float references, {c['evaluations_reused']}/{c['runnable']} evaluations, "
          f"{c['measurements_reused']}/{c['runnable']} latency measurements")
    for job in plan.builds.values():
        _line(f"    {_state(job.reused, 'build')}  {escape(job.label)}  key {job.step.key}")
    for cell in plan.cells:
        if cell.skip is not None:
            _line(f"    [red]not run[/]  {escape(cell.trial)} on {cell.device}: {escape(cell.skip)}")
            continue
        evaluation = _state(cell.eval_reused, "evaluate") if cell.eval_key else "evaluate (after build)"
        latency = _state(cell.measure_reused, "time") if cell.measure_key else "time (after build)"
        _line(f"    {escape(cell.trial)} on {cell.device}: {evaluation}, {latency}")


def _execute(plan, address: Optional[str], workers: Optional[int]):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from deploykit.pipeline.sweep_run import run_sweep

    todo = sum(c.skip is None and not (c.eval_reused and c.measure_reused) for c in plan.cells)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[state]}"), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("rows", total=max(todo, 1), state="starting Ray…")

        def on_event(kind: str, payload: dict) -> None:
            if kind == "cell":
                progress.advance(task)
                progress.console.print(_cell_line(payload), highlight=False, soft_wrap=True)
            else:
                state = (f"running {len(payload['running'])}, failed {payload['failed']}, "
                         f"retried {len(payload['retried'])}")
                progress.update(task, state=state)

        outcome = run_sweep(plan, address=address, workers=workers, on_event=on_event)
    return outcome


def _cell_line(payload: dict) -> str:
    cell, build = payload["cell"], payload["build"] or {}
    evaluation, latency = payload["evaluation"] or {}, payload["latency"] or {}
    failures = [r["reason"] for r in (build, evaluation, latency) if r and not r.get("ok", True)]
    where = (evaluation.get("node_id") or build.get("node_id") or "")[:8]
    if failures:
        return f"[red]✗[/] {escape(cell.trial)} on {cell.device}: {escape(failures[0])}"
    top1, p50 = evaluation.get("top1"), latency.get("p50_ms")
    return (f"[green]✓[/] {escape(cell.trial)} on {cell.device}: top-1 {_pct(top1)}, p50 "
            f"{'n/a' if p50 is None else f'{p50:.3g} ms'}" + (f" (node {where})" if where else ""))


def _report(outcome, out: Path) -> None:
    from deploykit.pipeline.sweep_report import document, profile_report, retried_text, write_outputs
    from deploykit.pipeline.sweep_results import collect, fronts
    from deploykit.profile.environment import environment

    rows = collect(outcome)
    doc = document(outcome, rows)
    devices = {name: d.to_dict() for name, d in outcome.plan.devices.items()}
    threads = next(iter(outcome.plan.devices.values())).threads
    files = write_outputs(out, doc, rows, profile_report(doc, rows, devices, environment(threads=threads)))
    s = doc["summary"]
    _line(f"done in {s['seconds']:.1f} s ({s['build_eval_seconds']:.1f} s until the last build or evaluation), "
          f"{s['ran']} tasks ran, the rest came from the cache; rows: {s['ok']} ok, {s['failed']} failed, "
          f"{s['invalid']} invalid, {s['skipped']} not run; nodes: {len(s['nodes'])}")
    retried = s["retried"]
    _line("retried after a lost worker: " + (escape(retried_text(retried)) or "nothing"))
    for device, front in fronts(rows).items():
        members = ", ".join(f"{r.trial} ({_pct(r.top1)}, {r.latency_ms:.3g} ms)" for r in front)
        _line(f"[bold]Pareto front[/] {device}: {escape(members) or 'none'}")
    _line("wrote " + ", ".join(escape(str(f)) for f in files))


def _line(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True)


def _state(reused: bool, otherwise: str) -> str:
    return "[green]reused[/]" if reused else f"[yellow]{otherwise}[/]"


def _pct(v) -> str:
    return "n/a" if v is None else f"{v * 100:.2f} %"
