"""Regenerate the "training form vs deployed" section of BENCHMARKS.md.

For each model: the training-time (multi-branch) PyTorch model, the same graph exported to ONNX without
reparameterization, and deploykit's deployed ONNX, all timed side by side (interleaved) in one run on
ONNX Runtime / PyTorch CPU with the same thread count. Usage:
    python scripts/bench_deploy.py [--models mobileone_s0,...] [--runs 50] [--threads 2] [--update BENCHMARKS.md]
"""

from __future__ import annotations

import sys
import argparse
import tempfile
from pathlib import Path

import onnxruntime
import torch

from deploykit import zoo
from deploykit.export.onnx import count_ops, export_onnx
from deploykit.passes import fold_bn, reparameterize
from deploykit.profile.latency import measure_side_by_side
from deploykit.runtimes.onnxruntime import OrtModel
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script from anywhere
from scripts.bench_md import machine, update_section  # noqa: E402

DEFAULT_MODELS = "mobileone_s0,mobileone_s1,mobileone_s2,mobileone_s3,mobileone_s4,repvgg_a0"


def bench_model(name: str, *, runs: int, threads: int, tmp: Path) -> dict:
    torch.set_num_threads(threads)
    model = zoo.create(name)
    x = torch.randn(1, 3, 224, 224)
    train_onnx, deploy_onnx = tmp / f"{name}_train.onnx", tmp / f"{name}_deploy.onnx"
    export_onnx(model, x, train_onnx, simplify=False)
    export_onnx(fold_bn(reparameterize(model)), x, deploy_onnx)
    # ORT as deployed (spinning pool): the timing loop alternates blocks, so one pool's spinning cannot
    # steal the next call's cores; torch is timed in its own block afterwards.
    train_ort, deploy_ort = (OrtModel(p, threads=threads) for p in (train_onnx, deploy_onnx))
    xn = x.numpy()
    stats = measure_side_by_side({"ort_train": lambda: train_ort.run(xn), "ort_deploy": lambda: deploy_ort.run(xn)},
                                 runs=runs)
    with torch.no_grad():
        stats.update(measure_side_by_side({"torch_train": lambda: model(x)}, runs=runs))
    return {"name": name, "stats": stats, "convs": (count_ops(train_onnx).get("Conv", 0),
                                                     count_ops(deploy_onnx).get("Conv", 0))}


def render(rows: list[dict], runs: int, threads: int) -> str:
    lines = [
        "## Training form vs deployed ONNX (batch 1, 224², CPU)",
        "",
        f"Regenerate: `python scripts/bench_deploy.py --runs {runs} --threads {threads}`. "
        f"Machine: {machine()}, {threads} threads, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}. Medians of {runs} "
        "runs of the two ONNX graphs timed in alternating blocks (ORT's default spinning pools); "
        "the ratio is taken within the same run; "
        "PyTorch is timed in its own block.",
        "",
        "| model | Conv nodes train → deploy | PyTorch train-form p50 (ms) | ORT train-form p50 (ms) "
        "| ORT deployed p50 (ms) | deployed / ORT train-form |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["stats"]
        ratio = s["ort_deploy"].p50_ms / s["ort_train"].p50_ms
        lines.append(f"| {r['name']} | {r['convs'][0]} → {r['convs'][1]} | {s['torch_train'].p50_ms:.2f} | "
                     f"{s['ort_train'].p50_ms:.2f} | {s['ort_deploy'].p50_ms:.2f} | {ratio:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--update", type=Path, help="replace this section of a BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_model(n, runs=args.runs, threads=args.threads, tmp=Path(tmp)) for n in args.models.split(",")]
    text = render(rows, args.runs, args.threads)
    print(text)
    if args.update:
        update_section(args.update, "deploy-latency", text)


if __name__ == "__main__":
    main()
