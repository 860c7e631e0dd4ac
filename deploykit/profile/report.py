"""A ProfileReport as Markdown, CSV, JSON or one self-contained HTML page.

Markdown and CSV have one line per artifact x device x batch; JSON is the full report (`ProfileReport.to_dict`,
fractions and bytes as measured); HTML is the tables plus an accuracy-vs-latency plot per device with the
Pareto frontier (see `report_html`). Measured time sits next to MACs, params and memory access, with
"ms per GMAC" making visible how little compute alone predicts latency.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Callable

from deploykit.profile.results import FLOAT_ORIGINAL, BatchLatency, ProfileReport, ProfileRow

FORMATS = ("md", "csv", "json", "html")
NA = "n/a"


@dataclass(frozen=True)
class Column:
    key: str  # the CSV header
    title: str  # the Markdown / HTML header
    value: Callable[[ProfileRow, BatchLatency], object]  # raw value for CSV
    text: Callable[[object], str] = str  # formatted for people
    vs_reference: bool = False  # measured against the float original: that row shows "reference"


def _fmt(spec: str, scale: float = 1.0) -> Callable[[object], str]:
    return lambda v: NA if v is None else format(v * scale, spec)


def _quality(attr: str) -> Callable[[ProfileRow, BatchLatency], object]:
    return lambda row, lat: None if row.quality is None else getattr(row.quality, attr)


def _per_gmac(row: ProfileRow, lat: BatchLatency) -> float | None:
    """Milliseconds per billion MACs, per image: equal for all rows if MACs predicted latency."""
    if lat.p50_ms is None or not row.cost.macs:
        return None
    return lat.p50_ms / lat.batch / (row.cost.macs / 1e9)


COLUMNS = (
    Column("device", "Device", lambda r, b: r.device),
    Column("name", "Artifact", lambda r, b: r.name),
    Column("role", "Role", lambda r, b: r.role),
    Column("runtime", "Runtime", lambda r, b: f"{r.runtime} {r.runtime_version}"),
    Column("precision_used", "Precision used", lambda r, b: r.precision_used),
    Column("batch", "Batch", lambda r, b: b.batch),
    # measured time next to the static cost, so the gap between them shows
    Column("p50_ms", "p50 ms", lambda r, b: b.p50_ms, _fmt(".3g")),
    Column("macs", "MMACs", lambda r, b: r.cost.macs, _fmt(".1f", 1e-6)),
    Column("params", "Params M", lambda r, b: r.cost.params, _fmt(".3f", 1e-6)),
    Column("memory_access", "Mem. access M", lambda r, b: r.cost.memory_access, _fmt(".2f", 1e-6)),
    Column("ms_per_gmac", "ms per GMAC", _per_gmac, _fmt(".3g")),
    Column("p90_ms", "p90 ms", lambda r, b: b.p90_ms, _fmt(".3g")),
    Column("p99_ms", "p99 ms", lambda r, b: b.p99_ms, _fmt(".3g")),
    Column("throughput_ips", "img/s", lambda r, b: b.throughput, _fmt(".4g")),
    Column("top1", "Top-1", _quality("top1"), _fmt(".2%")),
    Column("top5", "Top-5", _quality("top5"), _fmt(".2%")),
    Column("agreement", "Agreement", _quality("agreement"), _fmt(".1%"), vs_reference=True),
    Column("cosine", "Cosine", _quality("cosine"), _fmt(".6f"), vs_reference=True),
    Column("sqnr_db", "SQNR dB", _quality("sqnr_db"), _fmt(".1f"), vs_reference=True),
    Column("file_size_bytes", "Size MB", lambda r, b: r.file_size_bytes, _fmt(".2f", 1e-6)),
    Column("load_ms", "Load ms", lambda r, b: r.load_ms, _fmt(".0f")),
    Column("warmup_ms", "Warm-up ms", lambda r, b: r.warmup_ms, _fmt(".0f")),
    Column("energy_j_per_image", "J/img", lambda r, b: r.energy.joules_per_image, _fmt(".3g")),
    Column("note", "Note", lambda r, b: b.note or ""),
)
# Columns the people-facing tables leave out (they are in the section heading, or CSV-only).
HUMAN_SKIP = {"device", "role", "note"}
# The Markdown table without --wide: latency next to cost and accuracy, 11 columns instead of 21
SUMMARY = ("name", "precision_used", "batch", "p50_ms", "macs", "ms_per_gmac", "top1", "agreement", "sqnr_db",
           "file_size_bytes", "energy_j_per_image")


def flat_rows(report: ProfileReport, device: str | None = None) -> list[tuple[ProfileRow, BatchLatency]]:
    """(row, latency at one batch): one line per artifact x device x batch, in report order."""
    return [(row, lat) for row in report.rows if device in (None, row.device) for lat in row.latency]


def cell_text(column: Column, row: ProfileRow, lat: BatchLatency) -> str:
    """What people see: "n/a (static batch 1)" in place of a latency, "reference" on the float original."""
    value = column.value(row, lat)
    if column.vs_reference and row.role == FLOAT_ORIGINAL:
        return "reference"
    if column.key == "p50_ms" and value is None and lat.note:
        return lat.note
    return column.text(value)


def human_columns() -> list[Column]:
    return [c for c in COLUMNS if c.key not in HUMAN_SKIP]


def render(report: ProfileReport, fmt: str, *, wide: bool = False) -> str:
    """`report` as md, csv, json or html. Markdown shows the SUMMARY columns unless `wide` (CSV, JSON and
    HTML always carry every column)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "html":
        from deploykit.profile.report_html import render_html

        return render_html(report)
    if fmt == "md":
        return render_markdown(report, wide=wide)
    return {"csv": render_csv, "json": render_json}[fmt](report)


def render_json(report: ProfileReport) -> str:
    return json.dumps(report.to_dict(), indent=2, allow_nan=True) + "\n"


def render_csv(report: ProfileReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.key for c in COLUMNS])
    for row, lat in flat_rows(report):
        writer.writerow(["" if (v := c.value(row, lat)) is None else v for c in COLUMNS])
    return out.getvalue()


def render_markdown(report: ProfileReport, *, wide: bool = False) -> str:
    lines = ["# deploykit profile", "", environment_line(report), inputs_line(report), ""]
    columns = human_columns() if wide else [c for c in COLUMNS if c.key in SUMMARY]
    for device in report.device_names():
        lines += [f"## {device}", "", device_line(report, device), "",
                  "| " + " | ".join(c.title for c in columns) + " |",
                  "|" + "|".join("---" for _ in columns) + "|"]
        for row, lat in flat_rows(report, device):
            lines.append("| " + " | ".join(_md_escape(cell_text(c, row, lat)) for c in columns) + " |")
        lines += [""] + [f"- {row.name}: {note}" for row in report.rows if row.device == device
                         for note in row.notes] + [""]
    return "\n".join(lines).rstrip() + "\n"


def environment_line(report: ProfileReport) -> str:
    env = report.environment
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    isa = ", ".join(env.get("low_precision_isa") or []) or "none"
    return (f"Machine: {env.get('cpu', '?')} (int8/bf16 instructions: {isa}), "
            f"{env.get('usable_cores', '?')} usable cores "
            f"({env.get('logical_cores', '?')} logical), {env.get('os', '?')}. Versions: {versions}. "
            f"Energy: {env.get('energy_counter') or 'counter available'}.")


def inputs_line(report: ProfileReport) -> str:
    s = report.settings
    return (f"Accuracy and agreement on {s.get('inputs') or s.get('data') or 'n/a'}; latency over "
            f"{s.get('runs', '?')} runs after {s.get('warmup', '?')} warm-up runs, random inputs, "
            f"models of one runtime timed in alternating blocks.")


def device_line(report: ProfileReport, device: str) -> str:
    spec = report.devices.get(device, {})
    parts = [spec.get("description", ""), f"runtime {spec.get('runtime', '?')}",
             f"precision {spec.get('precision', '?')}", f"compute units {spec.get('compute_units', '?')}",
             f"threads {spec.get('threads') or 'runtime default'}"]
    return "; ".join(p for p in parts if p) + "."


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")
