"""Regenerate the "int8-trained" section of BENCHMARKS.md: naive int8 PTQ vs deploykit's int8 export on
deploykit's own trained multi-branch CIFAR-10 checkpoints (weights/), top-1 on all of cifar10/test.

Re-parameterized nets are the known int8 trap (RepVGG-A0 loses 20 points with standard PTQ, QARepVGG): a
folded conv sums branches whose output channels have very different weight ranges, and one scale per
tensor cannot serve them all. Random weights cannot show it; trained ones can.

- naive: what a user gets from ONNX Runtime's quantizer with its textbook settings: minmax calibration,
  one scale per weight tensor, every layer int8 — on the same calibration images deploykit uses.
- deploykit: `deploykit export MODEL --int8 --calib cifar10/train` (auto search, accuracy budget 1 point).
Both are QDQ graphs in ONNX Runtime's layout (u8 activations), run in ONNX Runtime on the deployed
(reparameterized, BN-folded) float ONNX.
Usage:
    python scripts/bench_int8_trained.py [--threads 2] [--update BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from deploykit import zoo
from deploykit.core.paths import data_dir
from deploykit.data import open_dataset
from deploykit.data.calibration import CalibrationConfig, open_calibration
from deploykit.export.quantize import Int8Quantizer, QuantizeConfig, prepare_for_quantization
from deploykit.pipeline.export import ExportRequest, export
from deploykit.pipeline.evaluate import evaluate
from deploykit.runtimes.onnxruntime import OrtModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script from anywhere
from scripts.bench_md import update_section  # noqa: E402

MODELS = ("mobileone_s0_cifar", "repvgg_a0_cifar")
CALIB = "cifar10/train"


def top1(path: Path, name: str, threads: int) -> float:
    model = OrtModel(path, threads=threads)
    return evaluate(model.run, open_dataset(data_dir() / "cifar10" / "test"), zoo.get(name).preprocess,
                    batch_size=1, workers=threads).top1


def naive_int8(float_onnx: Path, name: str, work: Path) -> Path:
    """minmax, per-tensor weights, every layer: the calibration images are deploykit's own range slice."""
    calib = open_calibration(CalibrationConfig(data_dir() / CALIB))
    ranges = list(calib.range_batches(zoo.get(name).preprocess, 1))
    prepared = prepare_for_quantization(float_onnx, work / "prepared.onnx")
    return Int8Quantizer(prepared, ranges, workdir=work).quantize(QuantizeConfig("minmax", per_channel=False),
                                                                  work / "naive.int8.onnx")


def bench(name: str, threads: int, tmp: Path) -> dict:
    work = tmp / name
    float_out = export(ExportRequest(model=name, target="onnx", out_dir=work / "float")).artifact
    ours = export(ExportRequest(model=name, out_dir=work / "int8",
                                options={"int8": True, "calib": data_dir() / CALIB, "threads": threads}))
    naive = naive_int8(float_out, name, work)
    record = ours.manifest.extra["int8"]
    return {"name": name, "float": top1(float_out, name, threads), "naive": top1(naive, name, threads),
            "ours": top1(ours.artifact, name, threads), "chosen": record["chosen"],
            "kept": [k["layer"] for k in record["kept_float"]],
            "spread": record["readiness"]["max_spread"]}


def render(rows: list[dict], threads: int) -> str:
    lines = [
        "## int8 on trained re-parameterized nets: naive PTQ vs deploykit",
        "",
        f"Regenerate: `python scripts/bench_int8_trained.py --threads {threads}`. Top-1 on all 10,000 "
        "cifar10/test images in ONNX Runtime; both int8 graphs calibrated on the same cifar10/train images. "
        "naive = ONNX Runtime `quantize_static`, minmax, per-tensor weights, every layer int8; deploykit = "
        "`deploykit export MODEL --int8 --calib cifar10/train` (defaults). Spread = the largest ratio of "
        "per-output-channel weight ranges in one folded conv (the readiness check).",
        "",
        "| model | float top-1 | naive int8 | deploykit int8 | chosen | layers kept float "
        "| max channel-range spread |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for r in rows:
        c = r["chosen"]
        granularity = "per-channel" if c["per_channel"] else "per-tensor"
        lines.append(f"| {r['name']} | {100 * r['float']:.2f} | {100 * r['naive']:.2f} "
                     f"({100 * (r['naive'] - r['float']):+.2f}) | {100 * r['ours']:.2f} "
                     f"({100 * (r['ours'] - r['float']):+.2f}) | {c['method']}, {granularity} "
                     f"| {len(r['kept'])} | {r['spread']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--update", type=Path, help="replace this section of a BENCHMARKS.md")
    args = parser.parse_args()
    missing = [n for n in args.models.split(",") if not Path(zoo.get(n).default_weights()).is_file()]
    if missing:
        sys.exit(f"no trained weights for {', '.join(missing)}: train them first (weights/README.md)")
    with tempfile.TemporaryDirectory(prefix="bench-int8-trained-") as tmp:
        rows = [bench(n, args.threads, Path(tmp)) for n in args.models.split(",")]
    text = render(rows, args.threads)
    print(text)
    if args.update:
        update_section(args.update, "int8-trained", text)


if __name__ == "__main__":
    main()
