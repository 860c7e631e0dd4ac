"""Regenerate the "timm-reparam" section of BENCHMARKS.md: deploykit's generic reparameterize on timm's own
model code, next to timm's `reparameterize_model`.

For every timm family with its own fold method (fuse / reparameterize / switch_to_deploy) and a sample of
families without: the model is built (pretrained=False, nothing downloaded) and its BatchNorm statistics are
measured on real ImageNet images (a cumulative average over the first 64 of imagenet_val1300, the model's own
preprocessing), so that folding is judged on trained-looking statistics, not init values. Then, in the
exported ONNX (TorchScript exporter + onnxsim, as `deploykit export` writes it): Conv and BatchNormalization
nodes of the training form, after timm's own `reparameterize_model`, and after deploykit's
reparameterize + fold_bn with every own fold method removed from the model's modules (only the generic path
can fold); the max relative output error of each deployed form against the training form on 16 other real
images (fp32); the ONNX Runtime latency of the two deployed graphs timed side by side (batch 1, 2 threads).

Usage: python scripts/bench_timm_reparam.py [--models a,b] [--runs 30] [--update BENCHMARKS.md]
(`--update` also rewrites deploykit/zoo/timm_coverage.json, what `deploykit models --source timm` lists).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere
from scripts.bench_md import machine, update_section  # noqa: E402
from deploykit.core.compare import compare_outputs  # noqa: E402
from deploykit.data.datasets import open_dataset  # noqa: E402
from deploykit.data.loader import batches  # noqa: E402
from deploykit.export.onnx import count_ops, export_onnx  # noqa: E402
from deploykit.passes.own_methods import without_own_methods  # noqa: E402
from deploykit.passes.runner import run_passes  # noqa: E402
from deploykit.profile.latency import measure_side_by_side  # noqa: E402
from deploykit.runtimes.onnxruntime import OrtModel  # noqa: E402
from deploykit.zoo import timm_source  # noqa: E402

OWN_FOLD = ("mobileone_s0,mobileone_s1,repvgg_a0,repvgg_b0,fastvit_t8,fastvit_sa12,repvit_m0_9,repghostnet_050,"
            "levit_128s,efficientvit_m0,efficientvim_m1,iformer_t,lcnetv2_small,nextvit_small,shvit_s1,"
            "tiny_vit_5m_224,ghostnetv3_050")
NO_FOLD = "resnet18,efficientnet_b0,mobilenetv3_small_100,regnetx_002"
COVERAGE = ROOT / "deploykit" / "zoo" / "timm_coverage.json"
DATA = Path(os.environ.get("DEPLOYKIT_DATA", ROOT.parent / "shared" / "data")) / "imagenet_val1300"
STAT_IMAGES, EVAL_IMAGES = 64, 16


def real_images(preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """(64 images for BN statistics, 16 others for the error), the model's own preprocessing."""
    pixels = np.concatenate([b for b, _ in batches(open_dataset(DATA), preprocess, 16,
                                                    limit=STAT_IMAGES + EVAL_IMAGES)])
    return torch.from_numpy(pixels[:STAT_IMAGES]), torch.from_numpy(pixels[STAT_IMAGES:])


@torch.no_grad()
def measure_bn_statistics(model: torch.nn.Module, images: torch.Tensor) -> None:
    """Running statistics = the cumulative average over `images` (batches of 16), as training leaves them."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for chunk in images.split(16):
        model(chunk)
    model.eval()


def norms_left(model: torch.nn.Module) -> int:
    """BatchNorms the PyTorch model still computes: norm layers, plus functional batch_norm calls in a graph
    (the ONNX exporter folds Conv+BN by itself, so ONNX counts alone hide what a model leaves)."""
    layers = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    graph = getattr(model, "graph", None)
    calls = 0 if graph is None else sum(n.op == "call_function" and "batch_norm" in getattr(n.target, "__name__", "")
                                        for n in graph.nodes)
    return layers + calls


def bench_model(name: str, *, runs: int, tmp: Path) -> dict:
    from timm.utils.model import reparameterize_model

    model = timm_source.create(name)
    preprocess = timm_source.preprocess(model)
    stats, held_out = real_images(preprocess)
    measure_bn_statistics(model, stats)
    masked, offering = without_own_methods(model)
    started = time.perf_counter()
    generic = run_passes(masked, [("reparameterize", None), ("fold_bn", None)], held_out[:1])
    seconds = time.perf_counter() - started
    forms = {"train": model, "timm": reparameterize_model(model), "deploykit": generic.model}
    with torch.no_grad():
        reference = model(held_out).numpy()
        errors = {k: compare_outputs(reference, forms[k](held_out).numpy(), "fp32").max_rel_err
                  for k in ("timm", "deploykit")}
    paths = {k: tmp / f"{name}.{k}.onnx" for k in forms}
    for key, form in forms.items():
        export_onnx(form, held_out[:1], paths[key])
    counts = {k: count_ops(p) for k, p in paths.items()}
    torch_norms = {k: norms_left(forms[k]) for k in ("timm", "deploykit")}
    sessions = {k: OrtModel(paths[k], threads=2) for k in ("timm", "deploykit")}
    x = held_out[:1].numpy()
    latency = measure_side_by_side({k: (lambda s=s: s.run(x)) for k, s in sessions.items()}, runs=runs)
    report = generic.records[0].report
    return {"name": name, "own_method_modules": offering, "size": preprocess.input_size,
            "conv": {k: c.get("Conv", 0) for k, c in counts.items()},
            "bn": {k: c.get("BatchNormalization", 0) for k, c in counts.items()},
            "errors": errors, "blocks": report["blocks_folded"], "pairs": report["conv_bn_folded"],
            "torch_norms": torch_norms, "same_ops": counts["timm"] == counts["deploykit"],
            "unfolded": report["unfolded"], "pass_seconds": round(seconds, 1),
            "p50_ms": {k: v.p50_ms for k, v in latency.items()}}


def safe_bench(name: str, *, runs: int, tmp: Path) -> dict:
    """A model that fails anywhere is a row saying where, not a crash of the whole table."""
    try:
        return bench_model(name, runs=runs, tmp=tmp)
    except Exception as exc:  # noqa: BLE001 - recorded in the table
        return {"name": name, "failed": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}


def render(rows: list[dict], runs: int) -> str:
    import timm

    lines = [
        "## timm models: deploykit's generic re-parameterization vs timm's own (batch 1, CPU)",
        "",
        f"Regenerate: `python scripts/bench_timm_reparam.py --runs {runs} --update BENCHMARKS.md`. Machine: "
        f"{machine()}, timm {timm.__version__}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}. "
        "Random init, BatchNorm statistics measured on 64 real ImageNet images; counts are ONNX nodes "
        "(TorchScript exporter + onnxsim); **deploykit** = reparameterize + fold_bn with every "
        "`fuse`/`reparameterize`/`switch_to_deploy` removed from the model (only the generic path folds); "
        "error = max |Δ| / max |ref| against the training form on 16 other real images (fp32 tolerance "
        "1e-4); BN in PyTorch = norm layers and functional batch_norm calls the deployed PyTorch model still "
        "runs (the ONNX exporter folds Conv+BN itself, so ONNX counts hide them); same ops = identical ONNX op "
        "histograms of the two deployed graphs; latency = ORT p50 of the two deployed graphs timed side by "
        "side in alternating blocks, 2 threads (ratio = deploykit / timm; with identical graphs it shows the "
        "machine's noise).",
        "",
        "| model | own fold method | ONNX Conv: train → timm → deploykit | ONNX BN: train → timm → deploykit "
        "| BN in PyTorch: timm / deploykit | unfolded (sums / BNs) | error timm | error deploykit | same ops "
        "| ORT ms timm / deploykit | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['name']} | | failed: {r['failed']} | | | | | | | | |")
            continue
        c, b, p = r["conv"], r["bn"], r["p50_ms"]
        lines.append(
            f"| {r['name']} | {'yes' if r['own_method_modules'] else 'no'} "
            f"| {c['train']} → {c['timm']} → **{c['deploykit']}** | {b['train']} → {b['timm']} → **{b['deploykit']}** "
            f"| {_pair(r.get('torch_norms'))} "
            f"| {r['unfolded']['sums']} / {r['unfolded']['norms']} | {r['errors']['timm']:.1e} "
            f"| {r['errors']['deploykit']:.1e} | {_yes(r.get('same_ops'))} "
            f"| {p['timm']:.2f} / {p['deploykit']:.2f} "
            f"| {p['deploykit'] / p['timm']:.2f} |")
    if any("torch_norms" not in r for r in rows if "failed" not in r):
        lines += ["", "`-`: not measured in this run (the column was added to the script after it)."]
    return "\n".join(lines) + "\n"


def _pair(norms: dict | None) -> str:
    return "-" if norms is None else f"{norms['timm']} / **{norms['deploykit']}**"


def _yes(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


def write_coverage(rows: list[dict]) -> None:
    """What `deploykit models --source timm` lists: the measured rows, with the timm version."""
    import timm

    keep = [{k: r[k] for k in ("name", "own_method_modules", "conv", "bn", "torch_norms", "unfolded", "errors")
             if k in r}
            | ({"failed": r["failed"]} if "failed" in r else {}) for r in rows]
    COVERAGE.write_text(json.dumps({"timm": timm.__version__, "script": "scripts/bench_timm_reparam.py",
                                    "models": keep}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=f"{OWN_FOLD},{NO_FOLD}")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--update", type=Path, help="replace this section of a BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows.append(safe_bench(name, runs=args.runs, tmp=Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    text = render(rows, args.runs)
    print(text)
    if args.update:
        update_section(args.update, "timm-reparam", text)
        write_coverage(rows)


if __name__ == "__main__":
    main()
