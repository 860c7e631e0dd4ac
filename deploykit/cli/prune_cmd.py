"""`deploykit prune`: structured channel pruning of a zoo model into a weights file that remembers its shape."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from deploykit.cli.app import command, console
from deploykit.core.errors import DeployKitError


@command
def prune(
    model: str = typer.Argument(..., help="zoo model name (see `deploykit models`)"),
    out: Path = typer.Option(..., help="pruned weights file to write (.safetensors, with its layer widths)"),
    weights: Optional[Path] = typer.Option(None, help="weights to prune (default: the zoo's released weights)"),
    ratio: Optional[float] = typer.Option(None, min=0.0, max=0.99, help="fraction of each prunable group's "
                                                                       "channels to remove"),
    macs_fraction: Optional[float] = typer.Option(None, min=0.01, max=1.0, help="instead of --ratio: the "
                                                  "smallest uniform ratio leaving at most this fraction of MACs"),
    importance: str = typer.Option("l1", help="l1, l2, bn_scale or taylor (taylor needs --data)"),
    round_to: int = typer.Option(8, min=1, help="kept channel counts are multiples of this"),
    ignore: Optional[list[str]] = typer.Option(None, help="module name (prefix) whose output channels stay; "
                                                          "repeatable"),
    data: Optional[Path] = typer.Option(None, help="labelled images for taylor importance (a seeded batch)"),
) -> None:
    """Remove whole channels from MODEL, keeping coupled layers consistent; fine-tune next with
    `deploykit finetune MODEL --weights OUT --teacher float --data ...`."""
    from deploykit import zoo
    from deploykit.core.publish import check_output_file
    from deploykit.passes.prune import PruneConfig
    from deploykit.pipeline.prune_chain import prune_to_file
    from deploykit.profile.cost import count_cost
    from deploykit.pipeline.weights import build_model

    if (ratio is None) == (macs_fraction is None):
        raise DeployKitError("give exactly one of --ratio and --macs-fraction", fix="e.g. --ratio 0.3")
    check_output_file(out, ".safetensors")  # before the work: a .pth of safetensors bytes loads nowhere
    entry = zoo.get(model)
    float_model = build_model(model, weights, pretrained=True)
    target = None if macs_fraction is None else int(macs_fraction * count_cost(float_model, entry.input_size).macs)
    config = PruneConfig(ratio=ratio, target_macs=target, importance=importance, round_to=round_to,
                         ignore=tuple(ignore or ()))
    parent = weights if weights is not None else _released(model)
    with console.status(f"pruning {model}…"):
        _, record = prune_to_file(model, float_model, parent, entry.preprocess, config, data=data, out=out)
    macs, params = record["macs"], record["params"]
    console.print(f"[green]wrote[/] {out}: MACs {macs['before'] / 1e6:.1f} M -> {macs['after'] / 1e6:.1f} M "
                  f"({macs['after'] / macs['before']:.1%}), params {params['before'] / 1e6:.3f} M -> "
                  f"{params['after'] / 1e6:.3f} M", highlight=False)


def _released(model: str) -> Path | None:
    from deploykit import zoo

    locate = zoo.get(model).default_weights
    return None if locate is None else Path(locate())
