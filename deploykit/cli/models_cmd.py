"""`deploykit models`: the zoo, with our deploy-form cost next to the published figures."""

from __future__ import annotations

from typing import Iterable, Iterator, Optional

import typer
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from deploykit.cli.app import command, console, err_console


@command
def models(
    cost: bool = typer.Option(False, "--cost", help="add MACs and memory-access cost, with the % difference "
                                                    "from the paper (deploy form, each model's input size)"),
    layers: Optional[str] = typer.Option(None, "--layers", metavar="NAME",
                                         help="print the per-layer cost table of model NAME (implies --cost)"),
    source: str = typer.Option("zoo", "--source", help="zoo (deploykit's own models) or timm (what the generic "
                                                      "pass folds on timm's models, as measured)"),
    wide: bool = typer.Option(False, "--wide", help="every column (the checkpoint layouts each model loads)"),
) -> None:
    """List the zoo's models with their deploy-form parameter counts, the paper's, and their weights.

    MACs: multiply-accumulates of convs and linears. Memory access: elements they read and write.
    Elementwise ops count in neither (the VoVNet / ShuffleNetV2 definitions).
    """
    from deploykit import zoo

    if source == "timm":
        from deploykit.cli.timm_table import timm_coverage_table

        _print_uncropped(timm_coverage_table())
        return
    if source != "zoo":
        from deploykit.core.errors import DeployKitError

        raise DeployKitError(f"unknown --source {source!r}", fix="use --source zoo or --source timm")
    if layers is not None:
        _print_layers(zoo.get(layers).name)
    elif cost:
        console.print(_cost_table(zoo.names()))
    elif wide:
        _print_uncropped(_params_table(wide=True))  # all columns, at their natural width
    else:
        console.print(_params_table(wide=False))


def _params_table(*, wide: bool) -> Table:
    """From the static catalog (deploykit/zoo/catalog.json): instant, no model is built."""
    from deploykit.zoo.catalog import WEIGHT_SOURCES, read_catalog

    table = Table(title="deploykit zoo", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  caption_justify="left")
    for header in ("model", "family", "input", "params\n(M)", "paper\n(M)", "weights", *(("layouts",) if wide else ())):
        table.add_column(header, no_wrap=header != "layouts", justify="right" if "(M)" in header else "left")
    for row in read_catalog():
        cells = [row["name"], row["family"], str(row["input"]), _millions(row["params"]),
                 _paper_millions(row["paper_params_m"]), row["weights"]]
        table.add_row(*cells, *((", ".join(row["layouts"]) or "deploykit",) if wide else ()))
    table.caption = "\n".join([f"{kind}: {what}" for kind, what in WEIGHT_SOURCES.items()] + [
        "(--wide lists the checkpoint layouts each model loads; --weights FILE always wins)"])
    return table


_COST_CAPTION = ("Δ: ours vs paper, green within 2% (or the paper's rounding). RepVGG's and MobileOne's "
                 "\"FLOPs\" are multiply-adds, so they are compared with MACs.")


def _cost_table(names: list[str]) -> Table:
    from deploykit.pipeline.zoo_cost import compare_to_paper

    table = Table(title="deploykit zoo: deploy-form cost, batch 1, counts in millions", box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True, caption_justify="left")
    table.add_column("model", no_wrap=True)
    table.add_column("input")
    for header in ("params", "paper", "Δ", "MACs", "paper", "Δ", "memory\naccess"):
        table.add_column(header, justify="right", no_wrap=True)
    notes = []
    for name in _with_progress(names, "measuring"):
        row = compare_to_paper(name)
        table.add_row(*_cost_cells(row))
        notes += [f"{name}: {row.note}"] if row.note else []
    table.caption = "\n".join((_COST_CAPTION, *notes))
    return table


def _cost_cells(row) -> list[str]:
    report = row.report
    return [row.name, _side(report.input_shape[2:]),
            _millions(report.params), _paper_millions(row.paper_params_m),
            _delta(row.params_delta_pct, row.paper_params_m),
            _millions(report.macs, digits=0), _paper_millions(row.paper_macs_m),
            _delta(row.macs_delta_pct, row.paper_macs_m), _millions(report.memory_access, digits=1)]


def _print_layers(name: str) -> None:
    from deploykit.pipeline.zoo_cost import deploy_cost

    with console.status(f"building {name} (deploy form)"):
        report = deploy_cost(name)
    table = Table(title=f"{name}: per-layer cost, input {_shape(report.input_shape)}, shapes without the batch",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("layer", overflow="fold", min_width=12)  # long dotted names fold; numbers never do
    for header in ("type", "in", "out", "kernel", "groups", "params", "MACs", "memory\naccess"):
        table.add_column(header, justify="left" if header in ("type", "in", "out") else "right", no_wrap=True)
    for layer in report.layers:
        kernel = "-" if layer.kernel is None else _shape(layer.kernel)
        table.add_row(layer.name, layer.type, _shape(layer.in_shape[1:]), _shape(layer.out_shape[1:]), kernel,
                      str(layer.groups), str(layer.params), str(layer.macs), str(layer.memory_access))
    table.add_section()
    table.add_row("total", "", "", "", "", "", str(report.params), str(report.macs), str(report.memory_access))
    _print_uncropped(table)


def _print_uncropped(table: Table) -> None:
    """Exact counts must never be cut off: when the table is wider than the console (80 columns when piped),
    print it at its natural width and let the terminal wrap. Rich clamps `print(width=)` to the console's
    width, hence a second console on the same stream."""
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if natural <= console.width:
        console.print(table)
        return
    Console(file=console.file, width=natural, color_system=console.color_system,
            force_terminal=console.is_terminal).print(table)


def _with_progress(names: Iterable[str], what: str) -> Iterator[str]:
    """Yield `names` under a transient progress bar on stderr: the RepVGG-B models take seconds each."""
    names = list(names)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(what, total=len(names))
        for name in names:
            bar.update(task, description=f"{what} {name}")
            yield name
            bar.advance(task)


def _millions(count: int, *, digits: int = 2) -> str:
    return f"{count / 1e6:.{digits}f}"


def _paper_millions(value: float | None) -> str:
    """As the paper printed it (4.2, not 4.20): its precision is part of the comparison."""
    return "-" if value is None else f"{value:g}"


def _delta(delta_pct: float | None, paper: float | None) -> str:
    from deploykit.pipeline.zoo_cost import paper_tolerance_pct

    if delta_pct is None:
        return "-"
    colour = "green" if abs(delta_pct) <= paper_tolerance_pct(paper) else "yellow"
    return f"[{colour}]{delta_pct:+.1f}%[/]"


def _side(spatial: tuple[int, ...]) -> str:
    """224 for a square 224x224 input (narrower column), 192x256 otherwise."""
    return str(spatial[0]) if len(set(spatial)) == 1 else _shape(spatial)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
