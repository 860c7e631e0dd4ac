"""`deploykit profile`: artifacts and their float originals measured on devices, as a table or a report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from deploykit.cli.app import command, console, err_console
from deploykit.core.errors import DeployKitError

DEVICES, QUALITY, REPORT = "Devices and timing", "Accuracy and agreement", "Report"
SUFFIX_FORMATS = {".md": "md", ".csv": "csv", ".json": "json", ".html": "html", ".htm": "html"}


@command
def profile(
    artifacts: List[Path] = typer.Argument(..., metavar="ARTIFACT...", help="exported artifacts (.onnx, ...); "
                                           "the float original each descends from is found via its manifest"),
    device: List[str] = typer.Option(["host-cpu-ort"], "--device", "-d",
                                     help="device profile: a name in devices/ or a YAML path; repeat for several",
                                     rich_help_panel=DEVICES),
    data: Optional[Path] = typer.Option(None, help="images for accuracy and agreement (a folder, or a name under "
                                                   "the shared data folder, e.g. cifar10/test); without it, "
                                                   "agreement is measured on a random probe", rich_help_panel=QUALITY),
    limit: Optional[int] = typer.Option(None, min=1, help="use a seeded random subset of N images",
                                         rich_help_panel=QUALITY),
    batch: Optional[str] = typer.Option(None, help="batch sizes to time, e.g. 1,8 (default: the device's)",
                                       rich_help_panel=DEVICES),
    runs: int = typer.Option(50, min=1, help="timed runs per batch size", rich_help_panel=DEVICES),
    warmup: int = typer.Option(5, min=0, help="untimed runs first (their total is the warm-up time)",
                                rich_help_panel=DEVICES),
    fmt: Optional[str] = typer.Option(None, "--format", help="md, csv, json or html (default: from --out's "
                                                             "suffix, else md)", rich_help_panel=REPORT),
    out: Optional[Path] = typer.Option(None, help="write the report here instead of printing it",
                                       rich_help_panel=REPORT),
    wide: bool = typer.Option(False, "--wide", help="md: every column (p90/p99, img/s, top-5, cosine, memory "
                                                    "access, load and warm-up time); csv/json/html have them all",
                              rich_help_panel=REPORT),
) -> None:
    """Measure ARTIFACTs and their float originals on --device: load and warm-up time, latency p50/p90/p99 and
    throughput per batch size, size, params/MACs/memory access, accuracy and agreement with the float
    original, the precision really used, and energy per image where the machine has a counter."""
    report_format = _format(fmt, out)
    batches = _batches(batch)
    from deploykit.core.devices import load_device
    from deploykit.pipeline.profile import profile_artifacts
    from deploykit.profile.report import render
    from deploykit.profile.results import merge_reports

    devices = [load_device(name) for name in device]
    _warn_layouts(artifacts, devices)
    reports = []
    with _progress_bar() as bar:
        tasks: dict[str, int] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                for task in tasks.values():
                    bar.update(task, visible=False)
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        for spec in devices:
            reports.append(profile_artifacts(artifacts, spec, data=data, limit=limit,
                                             batches=batches or spec.batches, runs=runs, warmup=warmup,
                                             progress=progress))
    text = render(merge_reports(reports), report_format, wide=wide)
    if out is None:
        sys.stdout.write(text)
        return
    from deploykit.core.fsutil import write_text_atomic

    write_text_atomic(out, text)
    console.print(f"[green]wrote[/] {out} ({report_format}, {sum(len(r.rows) for r in reports)} rows)")


def _warn_layouts(artifacts: list[Path], devices: list) -> None:
    """Before the long measurement: an int8 file about to run on a runtime it was not laid out for."""
    from deploykit.core.manifest import verified_manifest
    from deploykit.pipeline.profile import layout_mismatch

    for path in artifacts:
        manifest = verified_manifest(Path(path)) if Path(path).exists() else None
        for spec in devices:
            for note in layout_mismatch(manifest, spec):
                err_console.print(f"[yellow]warning:[/] {Path(path).name} on {spec.name}: {note}", highlight=False)


def _format(fmt: str | None, out: Path | None) -> str:
    if fmt is None:
        return SUFFIX_FORMATS.get(out.suffix.lower(), "md") if out is not None else "md"
    if fmt not in SUFFIX_FORMATS.values():
        raise DeployKitError(f"unknown format {fmt!r}", fix="use md, csv, json or html")
    return fmt


def _batches(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) <= 0:
        raise DeployKitError(f"--batch {text!r} is not a comma-separated list of positive sizes", fix="e.g. --batch 1,8")
    return list(dict.fromkeys(sizes))


def _progress_bar() -> Progress:
    """On stderr and transient (stdout holds only the report); off when stderr is not a terminal."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=True, disable=not err_console.is_terminal)
