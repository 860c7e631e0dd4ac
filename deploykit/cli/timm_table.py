"""`deploykit models --source timm`: what the generic reparameterize pass folds on timm's models.

The rows are measurements (scripts/bench_timm_reparam.py writes deploykit/zoo/timm_coverage.json), read
from that file: building and exporting a timm model takes seconds to minutes, so a listing that built
them would be too slow to be a listing. The caption says which timm they were measured with, and how to
check any other model."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

from rich import box
from rich.table import Table


COVERAGE = Path(__file__).resolve().parents[1] / "zoo" / "timm_coverage.json"


def timm_coverage_table() -> Table:
    data = json.loads(COVERAGE.read_text())
    table = Table(title="timm models: deploykit's generic reparameterize (own fold methods removed) vs timm's own",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, caption_justify="left")
    for header in ("model", "own fold\nmethod", "ONNX Conv\ntrain→timm→deploykit", "ONNX BN\ntrain→timm→deploykit",
                   "BN in PyTorch\ntimm/deploykit", "unfolded\nsums/BNs", "max rel\nerror"):
        table.add_column(header, no_wrap=True)
    for row in data["models"]:
        table.add_row(*_cells(row))
    table.caption = (f"Measured with timm {data['timm']} by {data['script']} (counts: exported ONNX nodes; error: "
                     f"deploykit's deployed model vs the training form on real images, fp32). Installed timm: "
                     f"{_installed()}. Any other timm model: `deploykit export timm/NAME --random-init -v` "
                     "reports what was folded, by which path, and what was left and why.")
    return table


def _cells(row: dict) -> list[str]:
    if "failed" in row:
        return [f"timm/{row['name']}", "", f"[red]failed[/]: {row['failed']}", "", "", "", ""]
    conv, bn, unfolded = row["conv"], row["bn"], row["unfolded"]
    at_most = conv["deploykit"] <= conv["timm"] and bn["deploykit"] <= bn["timm"]
    colour = "green" if at_most else "yellow"
    return [f"timm/{row['name']}", "yes" if row["own_method_modules"] else "no",
            f"{conv['train']} → {conv['timm']} → [{colour}]{conv['deploykit']}[/]",
            f"{bn['train']} → {bn['timm']} → [{colour}]{bn['deploykit']}[/]",
            "-" if "torch_norms" not in row else f"{row['torch_norms']['timm']} / {row['torch_norms']['deploykit']}",
            f"{unfolded['sums']} / {unfolded['norms']}", f"{row['errors']['deploykit']:.1e}"]


def _installed() -> str:
    try:
        return metadata.version("timm")
    except metadata.PackageNotFoundError:
        return 'none (pip install "deploykit[timm]")'
