"""`export -v`: the reparameterize pass's report (from the manifest) as two tables: what was folded into
one conv per block, and what was left alone and why."""

from __future__ import annotations

from collections import Counter

from rich.markup import escape
from rich.table import Table

from deploykit.cli.app import console


def print_fold_summary(manifest, *, verbose: bool = False) -> None:
    """One line in export's normal output: what reparameterize folded, and what it left unfolded, where
    and why (never silent: an unfolded block costs the deployed model time)."""
    record = next((p for p in manifest.passes if p.name == "reparameterize"), None)
    if record is None or "unfolded" not in record.report:
        return
    report, unfolded = record.report, record.report["unfolded"]
    vias = Counter(b["via"] for b in report["blocks"])
    how = ", ".join(f"{n} {via}" for via, n in sorted(vias.items())) or "none"
    done = f"reparameterize: {report['blocks_folded']} blocks folded ({how}), {report['conv_bn_folded']} " \
           "conv/linear-BN pairs"
    if not (unfolded["sums"] or unfolded["norms"]):
        console.print(f"{done}; nothing left unfolded", highlight=False)
        return
    places = "; ".join(f"{x['where']} ({x['reason']})" for x in unfolded["first"][:3])
    more = "" if verbose else " (-v lists them all)"
    console.print(f"{done}\n[yellow]warning:[/] {unfolded['sums']} multi-branch sums and {unfolded['norms']} "
                  f"BatchNorms left unfolded{more}: {escape(places)}; --require-folded makes this an error",
                  highlight=False)


def print_reparam_report(manifest) -> None:
    record = next((p for p in manifest.passes if p.name == "reparameterize"), None)
    if record is None or "blocks" not in record.report:
        console.print("[yellow]no reparameterize report in the manifest[/]")
        return
    report = record.report
    if report["blocks"]:
        console.print(_folded_table(report["blocks"]))
    if report["left"]:
        console.print(_left_table(report["left"]))
    err = report.get("max_block_rel_err")
    err = "n/a" if err is None else f"{err:.1e}"
    console.print(f"{report['blocks_folded']} blocks folded (max block error {err}), "
                  f"{report['conv_bn_folded']} conv/linear-BN pairs folded, {len(report['left'])} structures left")
    for module in report.get("traced_separately", []):
        console.print(f"[yellow]note:[/] {escape(module)} does not trace with torch.fx; its children were "
                      "folded one by one")


def _folded_table(blocks: list[dict]) -> Table:
    table = Table(title="folded blocks", title_justify="left")
    for column in ("block", "branches", "kernel", "max rel err", "via"):
        table.add_column(column)
    for block in blocks:
        err = block["max_rel_err"]
        kernel = "x".join(map(str, block["kernel"])) or "linear"
        table.add_row(escape(block["where"]), " + ".join(block["branches"]), kernel,
                      "-" if err is None else f"{err:.1e}", block["via"])
    return table


def _left_table(left: list[dict]) -> Table:
    """One row per reason, with the places it applies (a deep net repeats the same reason many times)."""
    table = Table(title="left as they are", title_justify="left")
    for column in ("op", "reason", "count", "where"):
        table.add_column(column)
    places: dict[tuple[str, str], list[str]] = {}
    for item in left:
        places.setdefault((item["op"], item["reason"]), []).append(item["where"])
    counts = Counter({key: len(wheres) for key, wheres in places.items()})
    for (op, reason), count in counts.most_common():
        wheres = places[(op, reason)]
        shown = ", ".join(wheres[:3]) + (f", … (+{len(wheres) - 3})" if len(wheres) > 3 else "")
        table.add_row(op, escape(reason), str(count), escape(shown))
    return table
