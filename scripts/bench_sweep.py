"""Run a sweep from a fresh cache with 1, then 2 (or the given) in-process Ray workers, and regenerate its
BENCHMARKS.md section: build+eval wall time per worker count (the ratio), the load average around each run,
the Pareto front per device, and every row.

    python scripts/bench_sweep.py recipes/sweeps/resnet_cifar.yaml --workers 1,2
    python scripts/bench_sweep.py recipes/sweeps/efficientnet_lite0_resolution.yaml --workers 2

Each run starts from an empty cache folder (`--scratch/SPEC/wN`), so it builds and evaluates everything;
each run's results.json is kept beside it (`wN.json`), the last run's results and HTML report go to
`--out`. The runs' accuracies are compared row by row (the same artifacts must score the same whatever the
worker count). `--render` rewrites the section from the kept results without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploykit.pipeline.cache import PipelineCache  # noqa: E402
from deploykit.pipeline.sweep_plan import make_sweep_plan  # noqa: E402
from deploykit.pipeline.sweep_report import document, profile_report, write_outputs  # noqa: E402
from deploykit.pipeline.sweep_results import SweepRow, collect, fronts  # noqa: E402
from deploykit.pipeline.sweep_run import run_sweep  # noqa: E402
from deploykit.pipeline.sweep_spec import load_sweep  # noqa: E402
from deploykit.profile.environment import environment  # noqa: E402
from scripts.bench_md import machine, update_section  # noqa: E402

UNSTABLE = 0.10  # the profile's own bound on the spread between timing rounds (pipeline.profile)


def run_once(spec_path: Path, workers: int, cache_dir: Path) -> tuple[dict, list, object]:
    shutil.rmtree(cache_dir, ignore_errors=True)
    plan = make_sweep_plan(load_sweep(spec_path), spec_path, PipelineCache(cache_dir))
    before = os.getloadavg()[0]
    outcome = run_sweep(plan, workers=workers,
                        on_event=lambda kind, p: kind == "cell" and print(f"  {p['cell'].trial} on {p['cell'].device}"))
    rows = collect(outcome)
    doc = document(outcome, rows)
    doc["load_average"] = {"before": round(before, 2), "after": round(os.getloadavg()[0], 2)}
    print(f"workers {workers}: {outcome.seconds:.1f} s, build+eval {outcome.build_eval_seconds:.1f} s")
    (cache_dir.parent / f"w{workers}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return doc, rows, outcome


def section(spec_path: Path, runs: list[tuple[int, dict]], rows: list, command: str) -> str:
    last = runs[-1][1]
    s = last["summary"]
    lines = [f"## Sweep: {last['name']}", "",
             f"Regenerate: `{command}`. Machine: {machine()}, a shared 2-core machine (other jobs ran too: "
             f"see the load averages). Spec: `{spec_path}`; {s['trials']} trials, {s['rows']} rows "
             f"(trial x device): {s['ok']} ok, {s['failed']} failed, {s['invalid']} invalid. Evaluation: "
             f"{last['data']}, {max(r.n for r in rows)} images per row. Each run started from an empty cache "
             "(everything built and evaluated).", "",
             "| Ray workers (in-process) | build+eval wall s | total wall s | load average before → after |",
             "|---:|---:|---:|---|"]
    for workers, doc in runs:
        t, load = doc["summary"], doc["load_average"]
        lines.append(f"| {workers} | {t['build_eval_seconds']:.0f} | {t['seconds']:.0f} | "
                     f"{load['before']} → {load['after']} |")
    if len(runs) > 1:
        first, final = runs[0][1]["summary"], runs[-1][1]["summary"]
        lines += ["", f"build+eval wall time, {runs[-1][0]} workers / {runs[0][0]}: "
                      f"{final['build_eval_seconds'] / first['build_eval_seconds']:.2f} "
                      f"(total {final['seconds'] / first['seconds']:.2f}); " + _same_accuracy(runs)]
    lines += ["", "Pareto front per device (top-1 vs latency, fastest first; latency = p50 timed beside the "
                  "device's anchor, scaled by the anchor's median):", ""]
    for device, front in fronts(rows).items():
        members = ", ".join(f"{r.trial} ({100 * r.top1:.2f} %, {r.latency_ms:.3g} ms)" for r in front)
        lines.append(f"- **{device}**: {members or 'none'}")
    measured = [r for r in rows if r.spread is not None]
    unstable = [r for r in measured if r.spread > UNSTABLE]
    loads = [r.load_average for r in measured]
    lines += ["", f"Timing quality: {len(unstable)} of {len(measured)} latency measurements were unstable (the "
                  f"medians of their timing rounds differ by more than {UNSTABLE:.0%}; median spread "
                  f"{sorted(r.spread for r in measured)[len(measured) // 2]:.0%}), load average "
                  f"{min(loads):.1f}-{max(loads):.1f} while measuring on 2 cores: the absolute milliseconds are the "
                  "busy machine's, and multi-threaded fp32 inference slowed far more than its MACs would say. "
                  "Accuracy does not depend on the load.",
              "", "| trial | device | top-1 | Δ vs float | latency ms | raw p50 ms | × anchor | spread | MMACs | MB | front |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.status != "ok":
            lines.append(f"| {r.trial} | {r.device} | {r.status}: {r.reason[:90]} | | | | | | | | |")
            continue
        lines.append(f"| {r.trial} | {r.device} | {100 * r.top1:.2f} | {-100 * (r.top1_drop or 0):+.2f} | "
                     f"{r.latency_ms:.3g} | {r.p50_ms:.3g} | {r.vs_anchor or 1:.2f} | {r.spread or 0:.0%} | "
                     f"{(r.macs or 0) / 1e6:.1f} | {(r.size_bytes or 0) / 1e6:.2f} | {'★' if r.pareto else ''} |")
    return "\n".join(lines)


def _same_accuracy(runs: list[tuple[int, dict]]) -> str:
    tops = [{(r["trial"], r["device"]): r["top1"] for r in doc["rows"]} for _, doc in runs]
    differ = [k for k in tops[0] if any(t.get(k) != tops[0][k] for t in tops[1:])]
    return "top-1 identical row by row across the runs" if not differ else \
        f"top-1 differs across runs in {len(differ)} rows: {differ[:3]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", type=Path)
    parser.add_argument("--workers", default="1,2", help="worker counts to run, in order (comma-separated)")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/deploykit-bench-sweep"))
    parser.add_argument("--out", type=Path, default=None, help="results of the last run (default sweep-NAME/)")
    parser.add_argument("--md", type=Path, default=Path(__file__).resolve().parents[1] / "BENCHMARKS.md")
    parser.add_argument("--render", action="store_true", help="rewrite the section from the kept wN.json files")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    kept = args.scratch / Path(args.spec).stem
    if args.render:
        runs = [(w, json.loads((kept / f"w{w}.json").read_text())) for w in counts]
        rows = [SweepRow(**row) for row in runs[-1][1]["rows"]]
    else:
        runs, rows = _run_all(args, counts, kept)
    command = f"python scripts/bench_sweep.py {args.spec} --workers {args.workers}"
    update_section(args.md, f"sweep-{runs[-1][1]['name']}", section(args.spec, runs, rows, command))
    print(f"wrote the sweep-{runs[-1][1]['name']} section of {args.md}")


def _run_all(args, counts: list[int], kept: Path) -> tuple[list, list]:
    runs, rows, outcome = [], [], None
    for workers in counts:
        doc, rows, outcome = run_once(args.spec, workers, kept / f"w{workers}")
        runs.append((workers, doc))
    doc = runs[-1][1]
    devices = {name: d.to_dict() for name, d in outcome.plan.devices.items()}
    report = profile_report(doc, rows, devices, environment(threads=next(iter(outcome.plan.devices.values())).threads))
    out = args.out or Path(f"sweep-{doc['name']}")
    write_outputs(out, doc, rows, report)
    print(f"wrote {out}/")
    return runs, rows


if __name__ == "__main__":
    main()
