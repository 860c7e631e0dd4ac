"""Regenerate the "prune" and "trained-checkpoints" sections of BENCHMARKS.md: structured pruning +
distillation on real CIFAR-10, and deploykit's own trained multi-branch CIFAR-10 checkpoints.

1. ResNet-56 (released weights): prune to at most half the MACs (`deploykit prune --macs-fraction 0.5`,
   Taylor importance on a seeded batch of cifar10/train), distil from the float model for 3 epochs on
   cifar10/train (`deploykit finetune --teacher float`; resumable, so an interrupted bench picks up where it
   stopped), then top-1 of both on all of cifar10/test and ONNX Runtime latency of both deployed models,
   timed side by side (interleaved) in one run.
2. weights/*_cifar.safetensors: top-1 on cifar10/test, and the reparameterized model against the training
   form on real test images (fp32 tolerance).
Each goes to its own section ("prune", "trained-checkpoints"); --skip-prune / --skip-assets pick one.
Usage:
    python scripts/bench_prune.py [--workdir /tmp/deploykit-bench-prune] [--runs 200] [--update BENCHMARKS.md]
"""

from __future__ import annotations

import sys
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from deploykit import zoo
from deploykit.core.compare import compare_outputs
from deploykit.core.paths import data_dir
from deploykit.data import batches, open_dataset
from deploykit.export.onnx import export_onnx
from deploykit.passes import fold_bn, reparameterize
from deploykit.passes.prune import PruneConfig
from deploykit.pipeline.finetune import FLOAT_TEACHER, TRAINING_KEY, FinetuneRequest, finetune
from deploykit.pipeline.prune_chain import prune_to_file
from deploykit.pipeline.evaluate import evaluate
from deploykit.profile.cost import count_cost as cost
from deploykit.profile.latency import measure_side_by_side
from deploykit.runtimes.onnxruntime import OrtModel
from deploykit.training import TrainConfig
from deploykit.pipeline.weights import build_model
from deploykit.zoo.structure import read_metadata
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script from anywhere
from scripts.bench_md import machine, update_section  # noqa: E402

MODEL = "resnet56_cifar"
FINETUNE = TrainConfig(epochs=3, lr=0.05)
ASSETS = ("mobileone_s0_cifar", "repvgg_a0_cifar")
PARITY_IMAGES = 256


def top1(model: torch.nn.Module, name: str) -> float:
    model = model.eval()

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    return evaluate(predict, open_dataset(data_dir() / "cifar10" / "test"), zoo.get(name).preprocess,
                    batch_size=200).top1


def prune_and_distil(workdir: Path) -> tuple[Path, dict, dict]:
    """(fine-tuned weights, pruning record, training record); each step skipped when its file exists."""
    pruned_file, tuned = workdir / f"{MODEL}.pruned.safetensors", workdir / f"{MODEL}.pruned-ft.safetensors"
    entry = zoo.get(MODEL)
    float_model = build_model(MODEL, pretrained=True)
    target = cost(float_model, entry.input_size).macs // 2
    if not pruned_file.exists():
        prune_to_file(MODEL, float_model, Path(entry.default_weights()), entry.preprocess,
                      PruneConfig(target_macs=target, importance="taylor"), data="cifar10/train", out=pruned_file)
    if not tuned.exists():
        finetune(FinetuneRequest(model=MODEL, data=Path("cifar10/train"), out=tuned, config=FINETUNE,
                                 weights=pruned_file, teacher=FLOAT_TEACHER, eval_data=Path("cifar10/test")))
    meta = read_metadata(tuned)
    return tuned, json.loads(meta["deploykit_prune"]), json.loads(meta[TRAINING_KEY])


def side_by_side_latency(models: dict[str, torch.nn.Module], *, runs: int, threads: int) -> dict:
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for label, model in models.items():
            path = Path(tmp) / f"{label}.onnx"
            export_onnx(fold_bn(reparameterize(model.eval())), x, path)
            sessions[label] = OrtModel(path, threads=threads)
        xn = x.numpy()
        return measure_side_by_side({k: (lambda s=s: s.run(xn)) for k, s in sessions.items()}, runs=runs)


def resnet_rows(workdir: Path, *, runs: int, threads: int) -> dict:
    start = time.perf_counter()
    tuned, prune_record, training = prune_and_distil(workdir)
    float_model, pruned = build_model(MODEL, pretrained=True), build_model(MODEL, tuned)
    stats = side_by_side_latency({"float": float_model, "pruned": pruned}, runs=runs, threads=threads)
    full, thin = cost(float_model, 32), cost(pruned, 32)
    return {"float_top1": top1(float_model, MODEL), "pruned_top1": top1(pruned, MODEL),
            "macs": (full.macs, thin.macs), "params": (full.params, thin.params), "latency": stats,
            "prune": prune_record, "training": training, "bench_seconds": time.perf_counter() - start}


def asset_row(name: str) -> dict | None:
    path = Path(zoo.get(name).default_weights())
    if not path.exists():
        return None
    model = build_model(name, path)
    deployed = fold_bn(reparameterize(model))
    images, _ = next(batches(open_dataset(data_dir() / "cifar10" / "test"), zoo.get(name).preprocess,
                             PARITY_IMAGES, limit=PARITY_IMAGES))
    with torch.no_grad():
        x = torch.from_numpy(images)
        parity = compare_outputs(model(x).numpy(), deployed(x).numpy(), "fp32")
    training = json.loads(read_metadata(path)[TRAINING_KEY])
    # measured again (on the deploy form: equal to the training form, as `parity` shows, and 2-4x cheaper)
    return {"name": name, "top1": top1(deployed, name), "parity": parity, "training": training,
            "size_mb": path.stat().st_size / 1e6, "macs": cost(deployed, 32).macs, "params": cost(deployed, 32).params}


def render_prune(r: dict, *, runs: int, threads: int) -> str:
    lat, train = r["latency"], r["training"]
    per_epoch = ", ".join(f"{e['seconds'] / 60:.1f}" for e in train["history"])
    ratio = lat["pruned"].p50_ms / lat["float"].p50_ms
    cfg = r["prune"]["config"]
    lines = [
        "## Structured pruning + distillation (ResNet-56, CIFAR-10)",
        "",
        f"Regenerate: `python scripts/bench_prune.py --runs {runs} --threads {threads}`. Machine: "
        f"{machine()}, torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}. Top-1 on all 10,000 images of cifar10/test (JPEG).",
        "",
        f"Pruned with `{cfg['importance']}` importance to ≤ {cfg['target_macs'] / 1e6:.1f} M MACs (the smallest "
        f"uniform ratio, channels rounded to {cfg['round_to']}; residual streams kept, see passes/prune.py), then "
        f"distilled from the float model for {len(train['history'])} epochs on cifar10/train (T="
        f"{train['config']['temperature']}, soft weight {train['config']['soft_weight']}, peak lr "
        f"{train['config']['lr']}, batch {train['config']['batch_size']}, {train['threads']} thread).",
        "",
        "| | MACs (M) | params (M) | top-1 cifar10/test | ORT p50 (ms), batch 1, side by side |",
        "|---|---:|---:|---:|---:|",
        f"| float (released weights) | {r['macs'][0] / 1e6:.1f} | {r['params'][0] / 1e6:.3f} | "
        f"{100 * r['float_top1']:.2f} % | {lat['float'].p50_ms:.3f} |",
        f"| pruned + distilled | {r['macs'][1] / 1e6:.1f} ({r['macs'][1] / r['macs'][0]:.1%}) | "
        f"{r['params'][1] / 1e6:.3f} | {100 * r['pruned_top1']:.2f} % | {lat['pruned'].p50_ms:.3f} |",
        "",
        f"Top-1 change {100 * (r['pruned_top1'] - r['float_top1']):+.2f} pt; latency pruned / float "
        f"{ratio:.2f} (medians of {runs} runs timed in alternating blocks, {threads} ORT thread). Fine-tune time: "
        f"{train['train_seconds'] / 60:.1f} min of training steps (wall clock, on a shared 2-core machine), per "
        f"epoch {per_epoch} min.",
    ]
    return "\n".join(lines) + "\n"


def render_assets(assets: list[dict]) -> str:
    lines = ["## deploykit's trained CIFAR-10 multi-branch checkpoints (weights/)", "",
             "Regenerate: `python scripts/bench_prune.py --skip-prune`. Machine: "
             f"{machine()}, torch {torch.__version__}. "
             "Trained from scratch with `deploykit finetune` (no teacher; commands in weights/README.md). "
             "Parity: the reparameterized + BN-folded model against the training form on "
             f"{PARITY_IMAGES} real cifar10/test images.", "",
             "| model | file (MB) | deploy MACs (M) | deploy params (M) | epochs | training time (min) "
             "| top-1 cifar10/test | reparameterized vs training form |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for a in assets:
        t = a["training"]
        parity = a["parity"].summary().replace("|", r"\|")  # its "max|Δ|" would split the table cell
        lines.append(f"| {a['name']} | {a['size_mb']:.1f} | {a['macs'] / 1e6:.1f} | {a['params'] / 1e6:.2f} | "
                     f"{len(t['history'])} | {t['train_seconds'] / 60:.0f} | {100 * a['top1']:.2f} % | "
                     f"{parity} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "deploykit-bench-prune")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--update", type=Path, help="replace this section of a BENCHMARKS.md")
    parser.add_argument("--skip-prune", action="store_true", help="only the trained-checkpoints section")
    parser.add_argument("--skip-assets", action="store_true", help="only the prune section")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sections = {}
    if not args.skip_prune:
        args.workdir.mkdir(parents=True, exist_ok=True)
        rows = resnet_rows(args.workdir, runs=args.runs, threads=args.threads)
        sections["prune"] = render_prune(rows, runs=args.runs, threads=args.threads)
    assets = [] if args.skip_assets else [row for row in (asset_row(n) for n in ASSETS) if row is not None]
    if assets:
        sections["trained-checkpoints"] = render_assets(assets)
    for name, text in sections.items():
        print(text)
        if args.update:
            update_section(args.update, name, text)


if __name__ == "__main__":
    main()
