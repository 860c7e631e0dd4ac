"""`deploykit eval`: top-1/top-5 of a zoo model or an ONNX artifact on a real dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from deploykit.cli.app import command, console, err_console
from deploykit.core.devices import DEFAULT_THREADS
from deploykit.core.errors import DeployKitError

_OUTSIDE = "ONNX without a manifest only:"


@command
def eval(  # noqa: A001 - the command is `deploykit eval`; typer names it after the function
    model: str = typer.Argument(..., metavar="MODEL_OR_ARTIFACT",
                                help="zoo model name, or an .onnx file (its manifest beside it is used)"),
    data: Path = typer.Option(..., help="dataset folder (class folders, dataset.txt list, MNIST IDX), "
                                        "or a name under the shared data folder, e.g. cifar10/test"),
    weights: Optional[Path] = typer.Option(None, help="weights for a zoo model (default: the zoo's, if any)"),
    limit: Optional[int] = typer.Option(None, min=1, help="evaluate a seeded random subset of N images"),
    seed: int = typer.Option(0, help="seed choosing the --limit subset"),
    batch_size: int = typer.Option(32, min=1, help="images per batch (static-batch ONNX is fed its own size)"),
    as_json: bool = typer.Option(False, "--json", help='print {"top1", "top5", "n"} with fractions in [0, 1]'),
    threads: int = typer.Option(DEFAULT_THREADS, min=1, help="runtime threads (and image-decoding threads)"),
    size: Optional[int] = typer.Option(None, min=1, help=f"{_OUTSIDE} input size (default: from the graph)"),
    resize: Optional[int] = typer.Option(None, min=1, help=f"{_OUTSIDE} resize the short side first"),
    interpolation: Optional[str] = typer.Option(None, help=f"{_OUTSIDE} bilinear, bicubic or nearest"),
    scale: Optional[float] = typer.Option(None, help=f"{_OUTSIDE} pixel multiplier (default 1/255)"),
    mean: Optional[str] = typer.Option(None, help=f"{_OUTSIDE} comma-separated, after scaling (default 0)"),
    std: Optional[str] = typer.Option(None, help=f"{_OUTSIDE} comma-separated, after scaling (default 1)"),
    grayscale: bool = typer.Option(False, "--grayscale", help=f"{_OUTSIDE} one luminance channel"),
    exclude_calib: Optional[Path] = typer.Option(None, "--exclude-calib", metavar="INT8_ARTIFACT",
                                                 help="leave out the images this int8 artifact was calibrated on "
                                                      "(its whole --calib-split part when --data is that folder)"),
    runtime: str = typer.Option("onnxruntime", help="for an .onnx file: onnxruntime or openvino "
                                                     "(.tflite runs in LiteRT, .pte in ExecuTorch)"),
) -> None:
    """Measure top-1/top-5 accuracy of MODEL_OR_ARTIFACT on --data.

    Human output is in percent; --json prints fractions in [0, 1] (top5 is null below five classes).
    """
    from deploykit.pipeline.evaluate import EvalRequest, PreprocessOptions, run_eval

    options = PreprocessOptions(size=size, resize=resize, interpolation=_interpolation(interpolation),
                                scale=scale, mean=_floats(mean, "mean"), std=_floats(std, "std"),
                                grayscale=grayscale)
    request = EvalRequest(target=model, data=data, weights=weights, limit=limit, seed=seed,
                          batch_size=batch_size, threads=threads, options=options, exclude_calib=exclude_calib,
                          runtime=runtime)
    with _progress_bar() as bar:
        task = bar.add_task("evaluating", total=None)
        outcome = run_eval(request, progress=lambda done, total: bar.update(task, completed=done, total=total))
    for warning in outcome.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}")
    if as_json:
        print(json.dumps(outcome.result.to_dict()))
    else:
        _print_human(outcome)


def _progress_bar() -> Progress:
    """On stderr, and gone when done, so stdout holds only the result (clean --json); off when stderr
    is not a terminal, where it could not redraw and would only leave blank lines in logs."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err_console, transient=True, disable=not err_console.is_terminal)


def _print_human(outcome) -> None:
    result = outcome.result
    top5 = "-" if result.top5 is None else f"{100 * result.top5:.2f} %"
    console.print(f"{outcome.description} on {outcome.data}", highlight=False)
    console.print(f"preprocessing: {_describe(outcome.preprocess)}", highlight=False)
    console.print(f"top-1 {100 * result.top1:.2f} %   top-5 {top5}   n {result.n}", highlight=False)


def _describe(recipe) -> str:
    """One line, e.g. `224x224 RGB, short side to 256 (bilinear), scale 1/255, mean 0.485/0.456/0.406, ...`."""
    if recipe.resize is None:
        resize = "no resize"
    else:
        resize = f"{'exact' if recipe.resize_exact else 'short side'} to {recipe.resize} ({recipe.interpolation})"
    scale = "1/255" if abs(recipe.scale - 1 / 255) < 1e-12 else f"{recipe.scale:.4g}"
    return (f"{recipe.input_size}x{recipe.input_size} {recipe.channels}, {resize}, scale {scale}, "
            f"mean {_numbers(recipe.mean)}, std {_numbers(recipe.std)}")


def _numbers(values) -> str:
    return "/".join(f"{v:.4g}" for v in values)


def _floats(text: str | None, name: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise DeployKitError(f"--{name} {text!r} is not a comma-separated list of numbers",
                             fix=f"e.g. --{name} 0.485,0.456,0.406") from None


def _interpolation(name: str | None) -> str | None:
    """One of the interpolations `Preprocess` declares (its annotation is the list)."""
    import typing

    from deploykit.core.options import choice
    from deploykit.core.preprocess import Preprocess

    return choice(name, typing.get_type_hints(Preprocess)["interpolation"], option="interpolation", what="eval")
