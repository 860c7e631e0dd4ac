"""Regenerate the "int8" sections of BENCHMARKS.md: is int8 faster here, and what does it cost?

Latency (section "int8"): for each model, the float ONNX and the int8 QDQ ONNX that `deploykit export`
writes, on ONNX Runtime and on OpenVINO (f32 hint; and OpenVINO's default hint, bf16 on CPUs that have
it, for reference), all interleaved in one run so that load spikes hit every candidate alike. The ratio
int8 / float is taken per runtime within that run: int8 is called faster only where it was measured.
MobileOne / RepVGG have no released weights here: their BN statistics are set from 64 real images
(imagenet_val1300), so activations have trained-like scales (a raw random init has exploding or
denormal activations that distort float timings). Their accuracy means nothing; their speed does.

Accuracy (section "int8-accuracy"): resnet56_cifar calibrated on cifar10/train (512 images) and
evaluated on all of cifar10/test; efficientnet_lite0 calibrated on 300 of imagenet_val1300
(--calib-split 300) and evaluated on the other 1,000 (--exclude-calib), at the default budget and at
--accuracy-budget 0.5. The int8 artifacts are evaluated in ONNX Runtime and in OpenVINO.

Usage (from the project root):
    python -m scripts.bench_int8 [--models mobileone_s1,repvgg_a0] [--runs 100] [--threads 2]
                                 [--skip-latency] [--skip-accuracy] [--update BENCHMARKS.md]
"""

from __future__ import annotations

import sys
import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from deploykit import zoo
from deploykit.core.paths import data_dir
from deploykit.data import batches, open_dataset
from deploykit.pipeline.evaluate import EvalRequest, run_eval
from deploykit.pipeline.export import ExportRequest, export
from deploykit.profile.latency import measure_side_by_side
from deploykit.runtimes.onnxruntime import OrtModel
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script from anywhere
from scripts.bench_md import machine, update_section  # noqa: E402

DEFAULT_MODELS = "mobileone_s1,repvgg_a0"
IMAGENET = "imagenet_val1300"
LATENCY_INT8 = {"calib_size": 96, "calib_method": "minmax", "per_channel": "on"}


# --- latency ----------------------------------------------------------------------------------------

@dataclass
class LatencyRow:
    name: str
    sizes: tuple[int, int]
    stats: dict
    precisions: dict


def conditioned_weights(name: str, path: Path) -> Path:
    """A random init whose BN statistics are measured on real images (cumulative average over 64)."""
    model = zoo.create(name)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    images = open_dataset(data_dir() / IMAGENET)
    with torch.no_grad():
        for x, _ in batches(images, zoo.get(name).preprocess, 16, limit=64):
            model(torch.from_numpy(x))
    torch.save(model.eval().state_dict(), path)
    return path


def export_pair(name: str, out: Path, weights: Path | None) -> tuple[Path, dict[str, Path]]:
    """The float artifact, and the int8 QDQ the int8 path builds from it with LATENCY_INT8's settings in
    each runtime's layout. The quantizer is called directly: a random net's logits are near-uniform, so
    int8 noise flips its argmax and the export's parity gate (rightly) refuses it; the graph is the same."""
    from deploykit.data.calibration import CalibrationConfig, open_calibration
    from deploykit.export.qdq_layout import LAYOUTS
    from deploykit.export.quantize import Int8Quantizer, QuantizeConfig, prepare_for_quantization

    float_art = export(ExportRequest(model=name, weights=weights, out_dir=out)).artifact
    calib = open_calibration(CalibrationConfig(data_dir() / IMAGENET, size=LATENCY_INT8["calib_size"]))
    prepared = prepare_for_quantization(float_art, out / f"{name}.prepared.onnx")
    ranges = list(calib.range_batches(zoo.get(name).preprocess, 1))
    config = QuantizeConfig(LATENCY_INT8["calib_method"], per_channel=LATENCY_INT8["per_channel"] == "on")
    int8 = {}
    for runtime in ("onnxruntime", "openvino"):
        quantizer = Int8Quantizer(prepared, ranges, workdir=out, layout=LAYOUTS[runtime])
        int8[runtime] = quantizer.quantize(config, out / f"{name}.{runtime}.int8.onnx")
    return float_art, int8


def bench_latency(name: str, *, runs: int, threads: int, tmp: Path) -> LatencyRow:
    from deploykit.runtimes.openvino import OpenVINOModel

    tmp = tmp / name
    tmp.mkdir()
    weights = None if zoo.get(name).family in ("resnet_cifar", "efficientnet_lite") else \
        conditioned_weights(name, tmp / f"{name}.pth")
    float_path, int8 = export_pair(name, tmp, weights)
    size = zoo.get(name).preprocess.input_size
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    models = {
        "ort_fp32": OrtModel(float_path, threads=threads),
        "ort_int8": OrtModel(int8["onnxruntime"], threads=threads),
        "ov_fp32": OpenVINOModel(float_path, threads=threads, precision="f32"),
        "ov_int8": OpenVINOModel(int8["openvino"], threads=threads, precision="f32"),
        "ov_default": OpenVINOModel(float_path, threads=threads, precision=None),
    }
    stats = measure_side_by_side({key: (lambda m=m: m.run(x)) for key, m in models.items()}, runs=runs, warmup=10)
    precisions = {key: m.precision_record()["summary"] for key, m in models.items()}
    return LatencyRow(name, (float_path.stat().st_size, int8["onnxruntime"].stat().st_size), stats, precisions)


def render_latency(rows: list[LatencyRow], runs: int, threads: int, load: tuple[float, float]) -> str:
    import openvino

    lines = [
        "## int8 vs float, per runtime (batch 1, CPU)",
        "",
        f"Regenerate: `python -m scripts.bench_int8 --runs {runs} --threads {threads}`. Machine: "
        f"{machine()}, {threads} threads, onnxruntime {onnxruntime.__version__}, "
        f"openvino {openvino.__version__.split('-')[0]}; load average {load[0]:.1f} before, {load[1]:.1f} after "
        "(a shared machine: compare ratios within a row, not absolute times across rows). "
        f"Medians of {runs} runs timed in alternating blocks. "
        "int8 = the QDQ graph `deploykit export --int8` writes in each runtime's layout (ORT columns: "
        "`--device host-cpu-ort`, u8 activations with Q/DQ on outputs too; OV columns: `--device "
        "host-cpu-openvino`, NNCF's placement), minmax, per-channel, every layer int8; the OpenVINO columns use an explicit f32 precision hint "
        "(int8 layers run in int8, the rest in fp32); \"OV default\" is the float model at OpenVINO's default "
        "hint, with the precision it ran in parentheses (bf16 on CPUs that have it: not the fp32 the artifact "
        "was checked in), for reference only.",
        "",
        "| model | size fp32 → int8 (MB) | int8/fp32 size | ORT fp32 | ORT int8 | OV fp32 | OV int8 | OV default "
        "(float) | int8/fp32 ORT | int8/fp32 OV | fastest |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        s = {k: v.p50_ms for k, v in r.stats.items()}
        fastest = min(s, key=s.get)
        lines.append(
            f"| {r.name} | {r.sizes[0] / 1e6:.1f} → {r.sizes[1] / 1e6:.1f} | {r.sizes[1] / r.sizes[0]:.2f} "
            f"| {s['ort_fp32']:.2f} | {s['ort_int8']:.2f} | {s['ov_fp32']:.2f} | {s['ov_int8']:.2f} "
            f"| {s['ov_default']:.2f} ({r.precisions['ov_default']}) | {s['ort_int8'] / s['ort_fp32']:.2f} "
            f"| {s['ov_int8'] / s['ov_fp32']:.2f} | {_LABELS[fastest]} |")
    lines += ["", "Precision each runtime actually ran (from ORT's optimized graph / OpenVINO's execution graph):", ""]
    for r in rows:
        lines.append(f"- {r.name}: " + "; ".join(f"{_LABELS[k]}: {v}" for k, v in r.precisions.items()))
    return "\n".join(lines) + "\n"


_LABELS = {"ort_fp32": "ORT fp32", "ort_int8": "ORT int8", "ov_fp32": "OV fp32", "ov_int8": "OV int8",
           "ov_default": "OV default"}


# --- accuracy ---------------------------------------------------------------------------------------

@dataclass
class AccuracyCase:
    name: str
    calib: str
    options: dict
    data: str
    exclude_calib: bool


CASES = (
    AccuracyCase("resnet56_cifar", "cifar10/train", {"calib_size": 512}, "cifar10/test", False),
    AccuracyCase("efficientnet_lite0", IMAGENET, {"calib_split": 300}, IMAGENET, True),
    AccuracyCase("efficientnet_lite0", IMAGENET, {"calib_split": 300, "accuracy_budget": 0.5}, IMAGENET, True),
    # per-tensor weights break the depthwise convs: the budget search has to keep the worst ones float
    AccuracyCase("efficientnet_lite0", IMAGENET, {"calib_split": 300, "calib_method": "minmax", "per_channel": "off"},
                 IMAGENET, True),
)


def bench_accuracy(case: AccuracyCase, *, threads: int, tmp: Path) -> dict:
    out = tmp / f"{case.name}-{len(os.listdir(tmp))}"
    outcome = export(ExportRequest(model=case.name, out_dir=out,
                                   options={"int8": True, "calib": data_dir() / case.calib, **case.options}))
    artifact, data = outcome.artifact, data_dir() / case.data
    exclude = artifact if case.exclude_calib else None

    def top1(target: str, runtime: str = "onnxruntime"):
        request = EvalRequest(target=target, data=data, threads=threads, exclude_calib=exclude, runtime=runtime)
        return run_eval(request).result

    float_size = outcome.manifest.extra["int8"]["float_onnx"]["size_bytes"]
    return {"case": case, "record": outcome.manifest.extra["int8"], "float": top1(case.name),
            "ort": top1(str(artifact)), "ov": top1(str(artifact), "openvino"),
            "size_ratio": outcome.manifest.size_bytes / float_size}


def render_accuracy(results: list[dict], threads: int) -> str:
    lines = [
        "## int8 accuracy on images the calibration never saw",
        "",
        f"Regenerate: `python -m scripts.bench_int8 --skip-latency --threads {threads}`. Each int8 artifact is "
        "`deploykit export MODEL --int8 --calib ...` with the options shown (calibration method and weight "
        "granularity chosen by `auto` on the held-out third of the calibration images), evaluated with "
        "`deploykit eval`; imagenet_val1300 rows leave out the 300 calibration images (`--exclude-calib`).",
        "",
        "| model | calibration | chosen | held-out loss: best full int8 → artifact (pt) | layers kept float | n "
        "| float top-1 | int8 top-1 ORT | int8 top-1 OV | Δ ORT (pt) | int8/fp32 size |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        case, rec, chosen = r["case"], r["record"], r["record"]["chosen"]
        options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in case.options.items())
        kept = ", ".join(e["layer"] for e in rec["kept_float"]) or "none"
        granularity = "per-channel" if chosen["per_channel"] else "per-tensor"
        full = min(c["loss_points"] for c in rec["candidates"])
        lines.append(
            f"| {case.name} | {case.calib} {options} | {chosen['method']}, {granularity} "
            f"| {full:.1f} → {chosen['loss_points']:.1f} | {len(rec['kept_float'])} ({kept}) | {r['ort'].n} "
            f"| {100 * r['float'].top1:.2f} "
            f"| {100 * r['ort'].top1:.2f} | {100 * r['ov'].top1:.2f} "
            f"| {100 * (r['ort'].top1 - r['float'].top1):+.2f} | {r['size_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--update", type=Path, help="replace these sections of a BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        if not args.skip_latency:
            before = os.getloadavg()[0]
            rows = [bench_latency(n, runs=args.runs, threads=args.threads, tmp=Path(tmp))
                    for n in args.models.split(",")]
            text = render_latency(rows, args.runs, args.threads, (before, os.getloadavg()[0]))
            print(text)
            if args.update:
                update_section(args.update, "int8", text)
        if not args.skip_accuracy:
            results = [bench_accuracy(case, threads=args.threads, tmp=Path(tmp)) for case in CASES]
            text = render_accuracy(results, args.threads)
            print(text)
            if args.update:
                update_section(args.update, "int8-accuracy", text)


if __name__ == "__main__":
    main()
