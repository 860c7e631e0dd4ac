"""`deploykit export`: fold, reparameterize, export, and prove parity — or leave nothing behind."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from deploykit.cli.app import command, console


@command
def export(
    model: str = typer.Argument(..., help="zoo model name (see `deploykit models`)"),
    target: str = typer.Option("onnx", help="export target"),
    weights: Optional[Path] = typer.Option(None, help=".pth/.pt/.th (loaded weights-only) or .safetensors"),
    out: Path = typer.Option(Path("artifacts"), help="output directory"),
    input_size: Optional[int] = typer.Option(None, help="input resolution (default: the model's own)"),
    batch: int = typer.Option(1, min=1, help="static batch size of the exported graph"),
    opset: int = typer.Option(17, min=7, help="ONNX opset"),
    num_classes: Optional[int] = typer.Option(None, min=1, help="classifier outputs (default: the model's)"),
    threads: int = typer.Option(2, min=1, help="runtime threads for the parity run"),
    precision: Optional[str] = typer.Option(None, help="coreml: fp16 (default), fp32, int8 (W8A8, needs --calib, "
                                                       "macOS); tensorrt: fp16 (default), fp32, int8"),
    compute_units: Optional[str] = typer.Option(None, help="coreml: all (default), cpu_and_ne, cpu_and_gpu, "
                                                           "cpu_only"),
    image_input: bool = typer.Option(False, "--image-input", help="coreml: take an image, preprocessing baked in"),
    weights_int8: bool = typer.Option(False, "--weights-int8", help="coreml: weight-only int8 (no data needed)"),
    calib: Optional[Path] = typer.Option(None, help="calibration images (coreml/tensorrt: the fp16 range scan; "
                                                    "coreml int8: activation ranges)"),
    workspace: Optional[int] = typer.Option(None, min=1, help="tensorrt: builder workspace in MiB (default 1024)"),
    require_engine: bool = typer.Option(False, "--require-engine",
                                        help="tensorrt: fail, writing nothing, unless an engine is built here"),
) -> None:
    """Export MODEL to TARGET with a manifest, after checking the artifact against the float model."""
    from deploykit.pipeline.export import ExportRequest, export as run_export

    request = ExportRequest(model=model, target=target, weights=weights, out_dir=out, input_size=input_size,
                            batch=batch, num_classes=num_classes,
                            options={"opset": opset, "threads": threads, **_set_only(
                                precision=precision, compute_units=compute_units, image_input=image_input,
                                weights_int8=weights_int8, calib=calib, workspace=workspace,
                                require_engine=require_engine)})
    with console.status(f"exporting {model} to {target}…"):
        outcome = run_export(request)
    report(outcome)


def _set_only(**options) -> dict:
    """Target options the user gave: the target rejects those that are not its own."""
    return {key: value for key, value in options.items() if value not in (None, False)}


def report(outcome) -> None:
    """What the user sees: warnings, the artifact with its size and structure, the parity verdict."""
    build = outcome.build
    for warning in build.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    structure = _structure(build.details)
    console.print(f"[green]wrote[/] {outcome.artifact}  ({outcome.manifest.size_bytes / 1e6:.1f} MB"
                  f"{structure}, {build.precision})")
    if build.parity is not None:
        runtime = build.details.get("parity_runtime")
        console.print(f"parity vs training-form PyTorch{f' ({runtime})' if runtime else ''}: {build.parity.summary()}")
    else:
        console.print(f"[yellow]parity not run here:[/] {escape(build.parity_note)}")
    for message in build.messages:
        console.print(escape(message), soft_wrap=True)  # commands must stay copy-pasteable


def _structure(details: dict) -> str:
    if "op_histogram" in details:  # Core ML: MIL ops
        ops = details["op_histogram"]
        return f", {ops.get('conv', 0)} conv, {ops.get('batch_norm', 0)} batch_norm"
    ops = details.get("op_counts", {})
    return f", {ops.get('Conv', 0)} Conv, {ops.get('BatchNormalization', 0)} BatchNormalization" if ops else ""
