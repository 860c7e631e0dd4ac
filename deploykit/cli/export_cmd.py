"""`deploykit export`: fold, reparameterize, export, and prove parity — or leave nothing behind."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from deploykit.cli.app import command, console, plural


@command
def export(
    model: Optional[str] = typer.Argument(None, help="zoo model name (see `deploykit models`), timm/NAME (timm's "
                                          "model code, the `timm` extra); or --model-from"),
    model_from: Optional[str] = typer.Option(None, "--model-from", help="your own model: package.module:factory, "
                                             "a callable returning an nn.Module (its code is imported and run)"),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="print what reparameterize folded and left"),
    require_folded: bool = typer.Option(False, "--require-folded", help="fail, writing nothing, when a multi-branch "
                                        "sum or a BatchNorm is left unfolded (for CI)"),
    target: str = typer.Option("onnx", help="export target"),
    weights: Optional[Path] = typer.Option(None, help=".pth/.pt/.th (loaded weights-only) or .safetensors; "
                                                  "default: the zoo's released weights, if it has them"),
    random_init: bool = typer.Option(False, "--random-init",
                                     help="export a random init even where the zoo has released weights"),
    out: Path = typer.Option(Path("artifacts"), help="output directory"),
    force: bool = typer.Option(False, "--force", help="replace an artifact of the same name made by a different "
                                                      "export (a rerun of the same export replaces it anyway)"),
    input_size: Optional[int] = typer.Option(None, help="input resolution (default: the model's own)"),
    batch: int = typer.Option(1, min=1, help="static batch size of the exported graph"),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="onnx (fp32): leave the batch axis free, "
                                       "so one artifact is profiled at every --batch"),
    opset: int = typer.Option(17, min=7, help="ONNX opset"),
    num_classes: Optional[int] = typer.Option(None, min=1, help="classifier outputs (default: the model's)"),
    threads: int = typer.Option(2, min=1, help="runtime threads for the parity run"),
    precision: Optional[str] = typer.Option(None, help="onnx: fp32 (default), fp16, int8 (= --int8); coreml: fp16 "
                                                       "(default), fp32, int8 (W8A8, needs --calib, macOS); "
                                                       "tensorrt: fp16 (default), fp32, int8 (needs --calib); "
                                                       "litert, executorch: fp32 (default), int8 (= --int8)"),
    compute_units: Optional[str] = typer.Option(None, help="coreml: all (default), cpu_and_ne, cpu_and_gpu, "
                                                           "cpu_only"),
    image_input: bool = typer.Option(False, "--image-input", help="coreml: take an image, preprocessing baked in"),
    weights_int8: bool = typer.Option(False, "--weights-int8", help="coreml: weight-only int8 (no data needed)"),
    calib: Optional[Path] = typer.Option(None, help="calibration images (coreml/tensorrt: the fp16 range scan; "
                                                    "coreml int8, onnx --int8: activation ranges), or a name "
                                                    "under the shared data folder, e.g. cifar10/train"),
    int8: bool = typer.Option(False, "--int8", help="onnx: int8 QDQ ONNX calibrated on --calib, chosen by "
                                                    "measured accuracy (writes MODEL.int8.onnx); litert, "
                                                    "executorch: PT2E int8 under the same rules"),
    device: Optional[str] = typer.Option(None, help="onnx int8: the device (devices/NAME.yaml) it is laid out for "
                                                    "and timed on against float (default host-cpu-ort; litert, "
                                                    "executorch: host-cpu-litert, host-cpu-executorch)"),
    require_faster: bool = typer.Option(False, "--require-faster", help="onnx int8: fail, writing nothing, unless "
                                        "int8 is measured faster than float on the device"),
    calib_size: Optional[int] = typer.Option(None, min=1, help="--int8: calibration images drawn, a third held "
                                                               "out for scoring (default 512)"),
    calib_split: Optional[int] = typer.Option(None, min=1, help="--int8: calibrate within the first N of a "
                                              "seeded shuffle of --calib; the rest stays for `deploykit eval "
                                              "--exclude-calib`"),
    calib_method: Optional[str] = typer.Option(None, help="--int8: minmax, entropy, percentile or auto (default: "
                                                          "try all, keep the best on held-out images)"),
    per_channel: Optional[str] = typer.Option(None, help="--int8: weight scales per channel: auto (default), on, off"),
    accuracy_budget: Optional[float] = typer.Option(None, help="--int8: top-1 points int8 may lose on the held-out "
                                                               "images (default 1.0); more sensitive layers stay "
                                                               "float until it fits"),
    workspace: Optional[int] = typer.Option(None, min=1, help="tensorrt: builder workspace in MiB (default 1024)"),
    require_engine: bool = typer.Option(False, "--require-engine",
                                        help="tensorrt: fail, writing nothing, unless an engine is built here"),
    prune: Optional[float] = typer.Option(None, min=0.0, max=0.99, help="first remove this fraction of the "
                                          "channels of every prunable layer group (structured pruning)"),
    prune_importance: str = typer.Option("l1", help="with --prune: l1, l2, bn_scale or taylor (taylor needs "
                                                    "--finetune-data)"),
    finetune_data: Optional[Path] = typer.Option(None, help="with --prune: fine-tune on these labelled images, "
                                                            "distilling from the unpruned float model"),
    finetune_epochs: int = typer.Option(3, min=1, help="with --finetune-data: epochs (rerun to resume)"),
    finetune_lr: float = typer.Option(0.02, min=0.0, help="with --finetune-data: peak OneCycle learning rate"),
) -> None:
    """Export MODEL to TARGET with a manifest, after checking the artifact against the float model."""
    from deploykit.pipeline.export import ExportRequest, export as run_export

    request = ExportRequest(model=model, target=target, weights=weights, out_dir=out, input_size=input_size,
                            batch=batch, num_classes=num_classes,
                            random_init=random_init, model_from=model_from,
                            options={"opset": opset, "threads": threads, **_set_only(
                                precision=precision, compute_units=compute_units, image_input=image_input,
                                weights_int8=weights_int8, calib=calib, workspace=workspace,
                                require_engine=require_engine, int8=int8, calib_size=calib_size,
                                calib_split=calib_split, calib_method=calib_method, per_channel=per_channel,
                                accuracy_budget=accuracy_budget, dynamic_batch=dynamic_batch, device=device,
                                require_faster=require_faster)},
                            prune=_prune_request(prune, prune_importance, finetune_data, finetune_epochs,
                                                 finetune_lr, threads), require_folded=require_folded, force=force)
    from deploykit.cli.progress import ProgressDisplay

    with ProgressDisplay(f"exporting {model or model_from} to {target}") as display:
        outcome = run_export(dataclasses.replace(request, progress=display.update))
    report(outcome)
    _report_pruning(outcome.manifest.extra.get("pruning"))
    from deploykit.cli.reparam_table import print_fold_summary

    print_fold_summary(outcome.manifest, verbose=verbose)
    if verbose:
        from deploykit.cli.reparam_table import print_reparam_report

        print_reparam_report(outcome.manifest)


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


def _prune_request(ratio, importance, data, epochs, lr, threads):
    """`--prune` and its fine-tune options as a PruneRequest (None without --prune)."""
    if ratio is None:
        if data is not None:
            from deploykit.core.errors import DeployKitError

            raise DeployKitError("--finetune-data needs --prune", fix="add e.g. --prune 0.3, or drop it")
        return None
    from deploykit.passes.prune import PruneConfig
    from deploykit.pipeline.prune_chain import PruneRequest
    from deploykit.training import TrainConfig

    return PruneRequest(PruneConfig(ratio=ratio, importance=importance), finetune_data=data,
                        finetune=TrainConfig(epochs=epochs, lr=lr), threads=threads)


def _set_only(**options) -> dict:
    """Target options the user gave: the target rejects those that are not its own."""
    return {key: value for key, value in options.items() if value is not None and value is not False}


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
