"""`deploykit export`: fold, reparameterize, export, and prove parity — or leave nothing behind."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from rich.markup import escape

from deploykit.cli.app import command, console, plural
from deploykit.cli.options import argument, given, option, takes, values_for
from deploykit.core.devices import DEFAULT_THREADS


MODEL, OUTPUT, TARGET, INT8, COREML, TENSORRT, PRUNING = (
    "Model and weights", "Output", "Target", "int8 (onnx, litert, executorch)", "Core ML", "TensorRT",
    "Pruning (before export)")
OPTIONS = (
    argument("model", Optional[str], None, "zoo model name (see `deploykit models`), timm/NAME (timm's model code, "
             "the `timm` extra); or --model-from"),
    option("model_from", Optional[str], None, "your model: package.module:factory returning an nn.Module (its "
           "code is run)", panel=MODEL),
    option("weights", Optional[Path], None, ".pth/.pt/.th (weights-only) or .safetensors; default: the zoo's "
           "released ones", panel=MODEL),
    option("random_init", bool, False, "a random init even where the zoo has weights", panel=MODEL,
           flags=("--random-init",)),
    option("num_classes", Optional[int], None, "classifier outputs (default: the model's)", panel=MODEL, min=1),
    option("input_size", Optional[int], None, "input resolution (default: the model's)", panel=MODEL),
    option("target", str, "onnx", "onnx, coreml, tensorrt, litert or executorch", panel=TARGET),
    option("precision", Optional[str], None, "fp32, fp16 or int8; default fp32 (onnx, litert, executorch), fp16 "
           "(coreml, tensorrt)", panel=TARGET, to="options"),
    option("batch", int, 1, "static batch of the graph", panel=TARGET, min=1),
    option("dynamic_batch", bool, False, "onnx fp32: a free batch axis (profiled at every --batch)", panel=TARGET,
           to="options", flags=("--dynamic-batch",)),
    option("opset", int, 17, "ONNX opset", panel=TARGET, to="options", min=7),
    option("threads", int, DEFAULT_THREADS, "runtime threads for the parity run", panel=TARGET, to="options", min=1),
    option("calib", Optional[Path], None, "images for int8 ranges and the fp16 range scan, or a name under the shared "
           "data folder (cifar10/train)", panel=TARGET, to="options"),
    option("out_dir", Path, Path("artifacts"), "output directory", panel=OUTPUT, flags=("--out",)),
    option("force", bool, False, "replace an artifact of another export at the same name", panel=OUTPUT,
           flags=("--force",)),
    option("require_folded", bool, False, "fail (writing nothing) when a branch sum or BN stays unfolded",
           panel=OUTPUT, flags=("--require-folded",)),
    option("verbose", bool, False, "print what reparameterize folded and left", panel=OUTPUT, to="show",
           flags=("-v", "--verbose")),
    option("int8", bool, False, "int8 calibrated on --calib, chosen by measured accuracy (MODEL.int8.*)",
           panel=INT8, to="options", flags=("--int8",)),
    option("device", Optional[str], None, "devices/NAME.yaml int8 is laid out and timed for (default host-cpu-ort)",
           panel=INT8, to="options"),
    option("require_faster", bool, False, "fail unless int8 is measured faster than float", panel=INT8,
           to="options", flags=("--require-faster",)),
    option("calib_size", Optional[int], None, "images drawn, a third held out to score (default 512)", panel=INT8,
           to="options", min=1),
    option("calib_split", Optional[int], None, "calibrate within the first N (eval --exclude-calib: the rest)",
           panel=INT8, to="options", min=1),
    option("calib_method", Optional[str], None, "minmax, entropy, percentile or auto (default: the best)",
           panel=INT8, to="options"),
    option("per_channel", Optional[str], None, "weight scales per channel: auto (default), on, off", panel=INT8,
           to="options"),
    option("accuracy_budget", Optional[float], None, "top-1 points int8 may lose (default 1.0)", panel=INT8,
           to="options"),
    option("compute_units", Optional[str], None, "all (default), cpu_and_ne, cpu_and_gpu, cpu_only", panel=COREML,
           to="options"),
    option("image_input", bool, False, "an image input, preprocessing baked in", panel=COREML, to="options",
           flags=("--image-input",)),
    option("weights_int8", bool, False, "weight-only int8 (no data needed)", panel=COREML, to="options",
           flags=("--weights-int8",)),
    option("workspace", Optional[int], None, "builder workspace in MiB (default 1024)", panel=TENSORRT,
           to="options", min=1),
    option("require_engine", bool, False, "fail unless an engine is built here", panel=TENSORRT, to="options",
           flags=("--require-engine",)),
    option("prune", Optional[float], None, "remove this fraction of each prunable layer group's channels",
           panel=PRUNING, to="prune", min=0.0, max=0.99),
    option("prune_importance", str, "l1", "l1, l2, bn_scale, taylor (needs --finetune-data)", panel=PRUNING,
           to="prune"),
    option("finetune_data", Optional[Path], None, "then fine-tune here, distilling from the float model",
           panel=PRUNING, to="prune"),
    option("finetune_epochs", int, 3, "fine-tune epochs (rerun to resume)", panel=PRUNING, to="prune", min=1),
    option("finetune_lr", float, 0.02, "peak OneCycle learning rate", panel=PRUNING, to="prune", min=0.0),
)


@command
@takes(OPTIONS)
def export(**values) -> None:
    """Export MODEL to TARGET with a manifest, after checking the artifact against the float model.
    Options of other targets are refused."""
    from deploykit.cli.progress import ProgressDisplay
    from deploykit.cli.reparam_table import print_fold_summary, print_reparam_report
    from deploykit.pipeline.export import export as run_export

    request = export_request(values)
    with ProgressDisplay(f"exporting {request.name} to {request.target}") as display:
        outcome = run_export(dataclasses.replace(request, progress=display.update))
    report(outcome)
    _report_pruning(outcome.manifest.extra.get("pruning"))
    print_fold_summary(outcome.manifest, verbose=values["verbose"])
    if values["verbose"]:
        print_reparam_report(outcome.manifest)


def export_request(values: dict):
    """The ExportRequest the command line describes: request fields by name, target options as given."""
    from deploykit.pipeline.export import ExportRequest

    options = values_for(OPTIONS, values, "options")
    return ExportRequest(**values_for(OPTIONS, values, "request"), options=given(options),
                         prune=_prune_request(**values_for(OPTIONS, values, "prune"), threads=values["threads"]))


def _report_pruning(record: dict | None) -> None:
    if record is None:
        return
    macs, params, ft = record["macs"], record["params"], record["finetune"]
    tuned = "not fine-tuned"
    if ft is not None:
        last = ft["history"][-1] if ft["history"] else None
        top1 = f", last epoch's train top-1 {100 * last['train_top1']:.1f} %" if last else ""
        tuned = f"fine-tuned {plural(len(ft['history']), 'epoch')} ({ft['weights']}{top1})"
    console.print(f"pruned: MACs {macs['before'] / 1e6:.1f} M -> {macs['after'] / 1e6:.1f} M, params "
                  f"{params['before'] / 1e6:.2f} M -> {params['after'] / 1e6:.2f} M, {tuned}; parity is against "
                  "the pruned float model", highlight=False)


def _prune_request(prune, prune_importance, finetune_data, finetune_epochs, finetune_lr, threads):
    """`--prune` and its fine-tune options as a PruneRequest (None without --prune)."""
    if prune is None:
        if finetune_data is not None:
            from deploykit.core.errors import DeployKitError

            raise DeployKitError("--finetune-data needs --prune", fix="add e.g. --prune 0.3, or drop it")
        return None
    from deploykit.passes.prune import PruneConfig
    from deploykit.pipeline.prune_chain import PruneRequest
    from deploykit.training import TrainConfig

    return PruneRequest(PruneConfig(ratio=prune, importance=prune_importance), finetune_data=finetune_data,
                        finetune=TrainConfig(epochs=finetune_epochs, lr=finetune_lr), threads=threads)


def report(outcome) -> None:
    """What the user sees: warnings, the artifact with its size and structure, the parity verdict."""
    build = outcome.build
    for warning in build.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    structure = _structure(build.details)
    console.print(f"[green]wrote[/] {outcome.artifact}  ({outcome.manifest.size_bytes / 1e6:.1f} MB"
                  f"{structure}, {build.precision})")
    console.print(f"weights: {_weights(outcome.manifest.parent, outcome.manifest.extra.get('pruning'))}")
    if build.parity is not None:
        runtime = build.details.get("parity_runtime")
        where = f" ({runtime})" if runtime else ""
        form = outcome.manifest.parent.get("kind", "torch-training-form").removeprefix("torch-")
        against = build.details.get("parity_against") or f"{form} PyTorch"
        console.print(f"parity vs {against}{where}: {build.parity.summary()}")
    else:
        console.print(f"[yellow]parity not run here:[/] {escape(build.parity_note)}")
    for message in build.messages:
        console.print(escape(message), soft_wrap=True)  # commands must stay copy-pasteable


def _weights(parent: dict, pruning: dict | None = None) -> str:
    if pruning is not None:  # the artifact's weights are the pruned (fine-tuned) file, not its parent's
        ft = pruning.get("finetune")
        source = escape(parent.get("weights_file") or "a random init")
        return f"{escape((ft or {}).get('weights') or pruning['pruned_weights'])} (pruned from {source})"
    if not parent.get("weights_file"):
        return ("[yellow]random init[/] (untrained): a trained model needs --weights FILE "
                "(`deploykit models` shows which models have weights here)")
    fused = ", already fused" if parent.get("kind") == "torch-deploy-form" else ""
    return (f"{escape(parent['weights_file'])} ({escape(str(parent.get('weights_layout')))} layout{fused}), "
            f"sha256 {parent['weights_sha256'][:12]}…")


def _structure(details: dict) -> str:
    if "structure" in details:  # LiteRT, ExecuTorch: counted in the written program
        counts = details["structure"]
        return f", {counts['conv_count']} conv, {counts['batch_norm_count']} batch-norm"
    if "op_histogram" in details:  # Core ML: MIL ops
        ops = details["op_histogram"]
        return f", {ops.get('conv', 0)} conv, {ops.get('batch_norm', 0)} batch_norm"
    ops = details.get("op_counts", {})
    return f", {ops.get('Conv', 0)} Conv, {ops.get('BatchNormalization', 0)} BatchNormalization" if ops else ""
