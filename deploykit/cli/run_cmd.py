"""`deploykit run` and `deploykit check`: a recipe's whole pipeline, cached, and judged for CI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deploykit.cli.app import command, console, err_console
from deploykit.cli.options import CACHE_HELP

LOG_WIDTH = 160
COLUMNS = ("stage", "artifact", "device", "top-1", "Δ top-1", "agree", "SQNR dB", "p50 ms", "verdict")
WIDE_ONLY = ("artifact", "SQNR dB")  # without them the table fits 80 columns; --wide shows them
LEFT = ("stage", "artifact", "device", "verdict")
WIDE_HELP = "every column of the table (artifact, SQNR), at its full width"
DEVICE_HELP = "profile only on this recipe device (repeatable); remote devices run only when selected"


@command
def run(
    recipe: Path = typer.Argument(..., help="recipe YAML (see recipes/)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan (stages, cache keys, reuse), stop"),
    cache: Optional[Path] = typer.Option(None, help=CACHE_HELP),
    device: Optional[list[str]] = typer.Option(None, "--device", help=DEVICE_HELP),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the plan (and results) as JSON"),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
) -> None:
    """Build every stage of RECIPE (reusing cached artifacts) and profile it on the recipe's devices."""
    plan = _plan(recipe, cache, device)
    print_plan(plan)
    if dry_run:
        _write_json(json_out, {"plan": plan.to_dict()})
        return
    result = _execute(plan, keep_going=False)
    print_results(result, wide=wide)
    _write_json(json_out, {"plan": plan.to_dict(), "results": _results_dict(result)})


@command
def check(
    recipe: Path = typer.Argument(..., help="recipe YAML with thresholds"),
    junit: Optional[Path] = typer.Option(None, help="write JUnit XML (a case per stage x device x check)"),
    cache: Optional[Path] = typer.Option(None, help=CACHE_HELP),
    device: Optional[list[str]] = typer.Option(None, "--device", help=DEVICE_HELP),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
) -> None:
    """Build or reuse RECIPE's artifacts, profile them, and exit 1 unless every threshold holds (an unstable
    latency holds none)."""
    from deploykit.pipeline.check import failed, judge
    from deploykit.pipeline.junit import write_junit

    plan = _plan(recipe, cache, device)
    result = _execute(plan, keep_going=True)
    reference = result.reference.top1 if result.reference else None
    cases = judge(plan.recipe, reference, result.measurements, result.build_errors, result.skipped)
    print_results(result, cases, wide=wide)
    if junit is not None:
        write_junit(junit, f"deploykit.check.{plan.recipe.name}", cases, seconds=result.seconds,
                    properties={"recipe": plan.recipe_path, "recipe_sha256": plan.recipe_sha256})
        console.print(f"wrote {junit}")
    _verdict(cases, failed(cases))


def _plan(recipe: Path, cache: Optional[Path], devices: Optional[list[str]]):
    from deploykit.core.paths import pipeline_cache_dir
    from deploykit.pipeline.cache import PipelineCache
    from deploykit.pipeline.plan import make_plan
    from deploykit.pipeline.recipe import load_recipe

    loaded = load_recipe(recipe)
    with console.status("hashing inputs…"):
        return make_plan(loaded, recipe, PipelineCache(pipeline_cache_dir(cache)),
                         select_devices=devices or None)


def _execute(plan, *, keep_going: bool):
    from deploykit.pipeline.run import run_plan

    with console.status("running…") as status:
        result = run_plan(plan, keep_going=keep_going, say=lambda text: status.update(escape(text)))
    _line(f"done in {result.seconds:.1f} s: {len(result.built)} built or measured, "
          f"{len(result.reused)} reused from {escape(str(plan.cache.root))}")
    return result


def _verdict(cases, failures) -> None:
    from deploykit.pipeline.check import unstable

    skipped, shaky = sum(c.status == "skipped" for c in cases), unstable(cases)
    for case in shaky:
        err_console.print(f"[yellow]UNSTABLE[/] {escape(case.name)}: {escape(case.message)}", highlight=False,
                          soft_wrap=True)
    if not failures and not shaky:
        console.print(f"[green]check passed[/]: {len(cases) - skipped} checks passed, {skipped} skipped")
        return
    from deploykit.core.errors import DeployKitError

    for case in failures:
        err_console.print(f"[red]FAIL[/] {escape(case.name)}: {escape(case.message)}", highlight=False,
                          soft_wrap=True)
    if not failures:  # a latency gate is never passed on a measurement the machine disturbed
        raise DeployKitError(f"check not passed: {len(shaky)} latency checks unstable, the rest passed",
                             fix="rerun on a quiet machine (an unstable latency is timed again; accuracy comes from the cache)", exit_code=1)
    stages = list(dict.fromkeys(c.stage for c in failures))
    raise DeployKitError(f"check failed at stage {', '.join(stages)}: {len(failures)} of {len(cases)} "
                         "checks failed", fix="see the FAIL lines above; the thresholds are in the recipe",
                         exit_code=1)


# --- rendering ------------------------------------------------------------------------------------

def print_plan(plan) -> None:
    """The plan as text: inputs with their hashes, each stage with its full cache key and reuse."""
    recipe, data = plan.recipe, plan.recipe.data
    limit = f", {data.limit} images (seeded subset)" if data.limit else ""
    _line(f"[bold]plan[/] {escape(str(plan.recipe_path))}  sha256 {plan.recipe_sha256}")
    _line(f"  model {recipe.model}, weights {escape(_name(plan.weights))} (sha256 {plan.weights_sha256})")
    _line(f"  data {escape(str(data.eval))}{limit} (sha256 {plan.data_sha256})")
    if data.calib:
        _line(f"  calib {escape(str(data.calib))} (sha256 {plan.calib_sha256})")
    _line(f"  cache {escape(str(plan.cache.root))}")
    _line("  stages (passes add to the parent's: the stage above unless `parent` says otherwise):")
    _line(f"    {'float':<10} training form in PyTorch: the reference every stage is compared with")
    for step in plan.artifacts:
        inherited = plan.step(step.parent).passes if step.parent != "float" else ()
        passes = ", ".join(_pass_label(p) for p in step.passes if p not in inherited) or "none"
        options = ", ".join(f"{k}={_name(v)}" for k, v in step.options.items()) or "-"
        _line(f"    {step.stage:<10} {_state(step.reused, 'build')}  from {step.parent}, {step.target}, "
              f"passes +{escape(passes)}, options {escape(options)}\n      key {step.key}")
    _line("  measurements (keyed by artifact sha256, device profile, data sha256, runs, tools):")
    for m in plan.measures:
        state = _state(m.reused, "measure") if m.key else "measure (after build)"
        state = f"skip: {m.skip}" if m.skip else state
        key = f"\n      key {m.key}" if m.key and not m.skip else ""
        _line(f"    {m.stage:<10} on {m.device:<22} {state}{key}")


def _line(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True)  # keys and paths stay whole and copy-pasteable


def _state(reused: bool, otherwise: str) -> str:
    return "[green]reused[/]" if reused else f"[yellow]{otherwise}[/]"


def _pass_label(spec) -> str:
    """`name(option=value, ...)` with the options that differ from the config type's defaults."""
    import dataclasses

    if spec.config is None:
        return spec.name
    changed = [f"{f.name}={getattr(spec.config, f.name)}" for f in dataclasses.fields(spec.config)
               if f.default is dataclasses.MISSING or getattr(spec.config, f.name) != f.default]
    return spec.name + (f"({', '.join(changed)})" if changed else "")


def _name(value) -> str:
    return Path(str(value)).name if isinstance(value, (str, Path)) and "/" in str(value) else str(value)


def print_results(result, cases=None, *, wide: bool = False) -> None:
    """The stage-by-stage table: where accuracy was lost, what each stage costs on each device. It fits 80
    columns; `wide` adds the artifact and SQNR columns (and never wraps)."""
    columns = COLUMNS if wide else tuple(c for c in COLUMNS if c not in WIDE_ONLY)
    table = Table(title=f"{result.plan.recipe.name}: stage by stage", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True, caption_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column in LEFT else "right", no_wrap=column != "verdict")
    rows, unstable = _result_rows(result, cases), False
    for row in rows:
        unstable |= row["p50 ms"].endswith("*")
        table.add_row(*(row.get(c, "") for c in columns))
    if unstable:
        table.caption = "* unstable: the timing rounds disagreed, also when measured again; timed again next run"
    if wide or not console.is_terminal:  # CI logs and --wide: every column whole, no 80-column wrap
        Console(file=console.file, width=LOG_WIDTH, force_terminal=console.is_terminal,
                color_system=console.color_system).print(table)
    else:
        console.print(table)


def _result_rows(result, cases) -> list[dict]:
    ref, rows = result.reference, []
    if ref is not None:
        rows.append({"stage": "float", "artifact": "PyTorch", "device": ref.device, "top-1": _pct(ref.top1),
                     "p50 ms": _ms(ref.latency_ms, ref.latency_unstable), "verdict": "reference"})
    by_key = {(m.stage, m.device): m for m in result.measurements}
    for step in result.plan.artifacts:
        artifact = result.artifacts.get(step.stage)
        what = f"{step.target} {artifact.manifest.precision}, {artifact.manifest.size_bytes / 1e6:.1f} MB" \
            if artifact else "-"
        if step.stage in result.build_errors:
            rows.append({"stage": step.stage, "artifact": what, "device": "-", "verdict": "[red]export failed[/]"})
            continue
        for device in result.plan.recipe.devices:
            m, skip = by_key.get((step.stage, device)), result.skipped.get((step.stage, device))
            row = {"stage": step.stage, "artifact": what, "device": device, "p50 ms": ""}
            if m is None and skip is not None:
                rows.append({**row, "verdict": f"skipped ({escape(skip)})"})
            elif m is not None:
                base = m.reference_top1 if m.reference_top1 is not None else (ref.top1 if ref else None)
                change = None if m.top1 is None or base is None else m.top1 - base
                rows.append({**row, "top-1": _pct(m.top1), "Δ top-1": _pts(change), "agree": _pct(m.agreement),
                             "SQNR dB": _db(m.sqnr_db), "p50 ms": _ms(m.latency_ms, m.latency_unstable),
                             "verdict": _stage_verdict(cases, step.stage, device) if cases is not None else ""})
    return rows


def _stage_verdict(cases, stage: str, device: str) -> str:
    mine = [c for c in cases if c.stage == stage and c.device == device]
    bad = [c.check for c in mine if c.status == "failed"]
    if bad:
        return f"[red]FAIL[/] {', '.join(bad)}"
    shaky = [c.check for c in mine if c.status == "unstable"]
    if shaky:
        return f"[yellow]UNSTABLE[/] {', '.join(shaky)}"
    if mine and all(c.status == "skipped" for c in mine):
        return "skipped"
    return "[green]PASS[/]" if mine else "-"


def _pct(v):
    return "" if v is None else f"{v * 100:.2f} %"


def _pts(v):
    return "" if v is None else f"{v * 100:+.2f} pt"


def _db(v):
    return "" if v is None else ("inf" if v == float("inf") else f"{v:.1f}")


def _ms(v, unstable: bool = False):
    return "" if v is None else f"{v:.2f}{'*' if unstable else ''}"


def _results_dict(result) -> dict:
    return {"seconds": result.seconds, "built": result.built, "reused": result.reused,
            "build_errors": result.build_errors,
            "reference": result.reference.to_dict() if result.reference else None,
            "measurements": [m.to_dict() for m in result.measurements],
            "skipped": [{"stage": s, "device": d, "reason": r} for (s, d), r in result.skipped.items()]}


def _write_json(path: Optional[Path], value: dict) -> None:
    if path is not None:
        from deploykit.core.fsutil import write_text_atomic

        write_text_atomic(path, json.dumps(value, indent=2, default=str) + "\n")
        console.print(f"wrote {path}")
