"""Print the zoo's deploy-form params / MACs / memory access next to the papers' figures, as Markdown.

For BENCHMARKS.md. Usage:
    python scripts/zoo_table.py [--models mobileone_s0,...] [--out FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deploykit import zoo
from deploykit.core.fsutil import write_text_atomic
from deploykit.pipeline.zoo_cost import PaperComparison, compare_to_paper

HEADER = ("| model | params ours (M) | params paper (M) | Δ% | MACs ours (M) | MACs paper (M) | Δ% "
          "| memory access (M) |")


def render(rows: list[PaperComparison]) -> str:
    lines = [
        "## Zoo cost: ours vs the papers (deploy form, batch 1)",
        "",
        "Regenerate: `python scripts/zoo_table.py`. Counted by `deploykit.profile.cost` on the deploy form "
        f"(reparameterize + fold_bn) at {_input_note(rows)}.",
        "MACs are multiply-accumulates of convs and linears; MobileNet's \"mult-adds\" and RepVGG's and "
        "MobileOne's \"FLOPs\" are the same quantity. Memory access counts the elements (not bytes) convs and "
        "linears read and write (VoVNet / ShuffleNetV2 definition); elementwise ops are in neither. "
        "Δ% = (ours − paper) / paper; paper figures are as printed, so 0.5 M or 1.4 G is only known to its "
        "last digit. \"–\": the paper gives no figure.",
        "",
        HEADER,
        "|---|" + "---:|" * 7,
    ]
    lines += [_row(row) for row in rows]
    notes = [f"- {row.name}: {row.note}" for row in rows if row.note]
    lines += ["", "Known gaps:", *notes] if notes else []
    return "\n".join(lines) + "\n"


def _row(row: PaperComparison) -> str:
    report = row.report
    cells = [row.name, f"{report.params / 1e6:.2f}", _paper(row.paper_params_m), _delta(row.params_delta_pct),
             f"{report.macs / 1e6:.0f}", _paper(row.paper_macs_m), _delta(row.macs_delta_pct),
             f"{report.memory_access / 1e6:.1f}"]
    return "| " + " | ".join(cells) + " |"


def _input_note(rows: list[PaperComparison]) -> str:
    """'224×224' when every model shares it, else e.g. '224×224 (32×32: resnet20_cifar, ...)'."""
    by_size: dict[str, list[str]] = {}
    for row in rows:
        by_size.setdefault("×".join(map(str, row.report.input_shape[2:])), []).append(row.name)
    if not by_size:
        return "-"
    common = max(by_size, key=lambda size: len(by_size[size]))
    others = [f"{size}: {', '.join(names)}" for size, names in by_size.items() if size != common]
    return common + (f" ({'; '.join(others)})" if others else "")


def _paper(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def _delta(delta_pct: float | None) -> str:
    return "–" if delta_pct is None else f"{delta_pct:+.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated zoo names (default: the whole zoo)")
    parser.add_argument("--out", type=Path, help="also write the table to this file (atomically)")
    args = parser.parse_args()
    names = args.models.split(",") if args.models else zoo.names()
    text = render([compare_to_paper(name) for name in names])
    print(text, end="")
    if args.out:
        write_text_atomic(args.out, text)


if __name__ == "__main__":
    main()
