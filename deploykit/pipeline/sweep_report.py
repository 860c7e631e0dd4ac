"""A sweep's results as files: results.json, results.csv, results.md (one row per trial x device) and
report.html (the profile report, one section per device, the Pareto front drawn and marked)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from deploykit.core.fsutil import write_text_atomic
from deploykit.pipeline.sweep_results import ROW_FIELDS, SweepRow, fronts
from deploykit.pipeline.sweep_run import retries
from deploykit.profile.results import ARTIFACT, BatchLatency, Cost, ProfileReport, ProfileRow, Quality

NA = "n/a"


def write_outputs(out_dir: Path, document: dict, rows: list[SweepRow], report: ProfileReport) -> list[Path]:
    """Each file staged and renamed into place; returns the paths written."""
    from deploykit.profile.report_html import render_html

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"results.json": json.dumps(document, indent=2, default=str) + "\n", "results.csv": render_csv(rows),
             "results.md": render_markdown(document, rows), "report.html": render_html(report)}
    for name, text in files.items():
        write_text_atomic(out_dir / name, text)
    return [out_dir / name for name in files]


def render_csv(rows: list[SweepRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ROW_FIELDS)
    for row in rows:
        writer.writerow(["" if (v := getattr(row, f)) is None else v for f in ROW_FIELDS])
    return out.getvalue()


def render_markdown(document: dict, rows: list[SweepRow]) -> str:
    s = document["summary"]
    lines = [f"# sweep {document['name']}", "",
             f"{s['trials']} trials, {s['rows']} rows (trial x device): {s['ok']} ok, {s['failed']} failed, "
             f"{s['invalid']} invalid, {s['skipped']} skipped; {s['seconds']:.0f} s "
             f"({s['build_eval_seconds']:.0f} s until the last build or evaluation) on {len(s['nodes'])} node(s).",
             "", "Pareto fronts (top-1 vs latency, fastest first):", ""]
    for device, front in fronts(rows).items():
        lines.append(f"- {device}: " + (", ".join(r.trial for r in front) or "none"))
    lines += ["", "Retried after a lost worker: " + (retried_text(s["retried"]) or "nothing"), ""]
    header = ["trial", "device", "status", "top-1", "Δ top-1", "agree", "latency ms", "p50 ms", "× anchor",
              "MMACs", "MB", "front", "node"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    notes = [f"- {r.trial} on {r.device}: {r.reason}" for r in rows if r.reason]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def retried_text(retried: dict[str, list[dict]]) -> str:
    """"LABEL (1 retry; pids 123, 456)" for each piece of work Ray ran again."""
    return ", ".join(f"{label} ({retries(starts)} retry; pids {', '.join(str(s['pid']) for s in starts)})"
                     for label, starts in retried.items())


def _cells(row: SweepRow) -> list[str]:
    return [row.trial, row.device, row.status, _pct(row.top1), _pts(row.top1_drop and -row.top1_drop),
            _pct(row.agreement), _num(row.latency_ms, ".3g"), _num(row.p50_ms, ".3g"), _num(row.vs_anchor, ".2f"),
            _num(row.macs and row.macs / 1e6, ".1f"), _num(row.size_bytes and row.size_bytes / 1e6, ".2f"),
            "★" if row.pareto else "", (row.build_node or "")[:8]]


def _pct(v) -> str:
    return NA if v is None else f"{100 * v:.2f} %"


def _pts(v) -> str:
    return NA if v is None else f"{100 * v:+.2f} pt"


def _num(v, spec: str) -> str:
    return NA if v is None else format(v, spec)


# --- the HTML report: the profile report's shape ------------------------------------------------------

def profile_report(document: dict, rows: list[SweepRow], devices: dict, environment: dict) -> ProfileReport:
    """The rows as a ProfileReport, so the one HTML renderer draws each device's plot and front."""
    batch = document.get("latency_batch", 1)
    report_rows = [_profile_row(row, batch, devices.get(row.device, {}).get("runtime", ""))
                   for row in rows if row.status != "skipped"]
    anchors = ", ".join(f"{d}: {a}" for d, a in document.get("anchors", {}).items())
    settings = {"inputs": f"{document['data']} (the same images for every trial); latency: each trial timed in "
                          f"alternating blocks beside its device's anchor ({anchors}) and scaled by the anchor's "
                          "median, so the machine's load moves both alike",
                "runs": document["profile"]["runs"], "warmup": document["profile"]["warmup"], "batches": [batch]}
    return ProfileReport(environment, report_rows, devices, settings)


def _profile_row(row: SweepRow, batch: int, runtime: str) -> ProfileRow:
    latency = [BatchLatency(batch, p50_ms=row.latency_ms, runs=1)] if row.latency_ms is not None else []
    quality = None if row.top1 is None else Quality(row.n, "evaluation images", row.top1, row.top5, row.agreement,
                                                    None, row.sqnr_db)
    notes = [f"{row.status}: {row.reason}"] if row.reason else []
    if row.p50_ms is not None:
        notes.append(f"raw p50 {row.p50_ms:.3g} ms, {row.vs_anchor or 1:.2f}x the anchor in the same measurement "
                     f"(load average {row.load_average or 0:.1f})")
    return ProfileRow(name=row.trial, role=ARTIFACT, device=row.device, runtime=runtime,
                      runtime_version="", precision_used=row.precision_used or row.precision, path=row.artifact,
                      model=row.model, file_size_bytes=row.size_bytes,
                      cost=Cost(row.params, row.macs, None, "ONNX graph"), latency=latency, quality=quality,
                      notes=notes)


def document(outcome, rows: list[SweepRow]) -> dict:
    """Everything the files say, as one JSON-able dict (results.json)."""
    from deploykit.pipeline.sweep_plan import latency_batch
    from deploykit.pipeline.sweep_results import summary

    plan = outcome.plan
    first = next(iter(plan.devices))
    data = f"{_data_name(plan.data.path)} ({plan.data.limit or 'all'} images" + \
           (", less the calibration pool)" if plan.data.exclude else ")")
    return {"name": plan.spec.name, "spec": str(plan.spec_path), "cache": str(plan.cache.root), "data": data,
            "profile": {"runs": plan.spec.profile.runs, "warmup": plan.spec.profile.warmup},
            "latency_batch": latency_batch(plan, first), "anchors": {d: plan.anchors.get(d) for d in plan.devices},
            "summary": summary(outcome, rows), "plan": plan.counts(),
            "fronts": {d: [r.trial for r in front] for d, front in fronts(rows).items()},
            "rows": [row.to_dict() for row in rows]}


def _data_name(path: Path) -> str:
    """`cifar10/test` for a folder under the shared data folder, else the path."""
    from deploykit.core.paths import data_dir

    try:
        return str(Path(path).resolve().relative_to(data_dir().resolve()))
    except ValueError:
        return str(path)
