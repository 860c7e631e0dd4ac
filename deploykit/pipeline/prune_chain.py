"""prune -> (fine-tune) for `deploykit export --prune`: the pruned float model the export then folds, exports
and checks parity against, with the record its manifest keeps.

Files (in the export's output directory, so a rerun of the same command resumes the fine-tune), named
after the artifact's stem (`<name>.pruned30` for --prune 0.3): `<stem>.safetensors` (pruned, before
fine-tuning; structure + pruning config in its header) and, with --finetune-data, `<stem>-ft.safetensors`
(+ its `.resume.safetensors` state).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from deploykit.core.errors import DeployKitError
from deploykit.core.fsutil import sha256_file
from deploykit.core.preprocess import Preprocess
from deploykit.core.progress import report_stage
from deploykit.passes.prune import PruneConfig, prune_channels
from deploykit.training import TrainConfig

TAYLOR_BATCH = 64


@dataclass(frozen=True)
class PruneRequest:
    """How to prune, and optionally fine-tune with distillation from the unpruned float model."""

    config: PruneConfig
    finetune_data: Path | None = None
    finetune: TrainConfig = TrainConfig(epochs=3, lr=0.02)
    threads: int = 1


@dataclass
class PrunedModel:
    model: nn.Module  # the pruned (and fine-tuned) float model, eval mode: the export's reference
    weights: Path  # its weights file
    record: dict  # for the manifest


def prune_for_export(name: str, model: nn.Module, parent_weights: Path | None, preprocess: Preprocess,
                     request: PruneRequest, out_dir: Path, progress=None, *, stem: str | None = None) -> PrunedModel:
    """`stem` names the files (the export's artifact stem, e.g. `resnet56_cifar.pruned30`: one pair of files
    per ratio, so two ratios in one folder never resume each other's fine-tune)."""
    stem = stem or f"{name}.pruned"
    pruned_file = Path(out_dir) / f"{stem}.safetensors"
    pruned, record = prune_to_file(name, model, parent_weights, preprocess, request.config,
                                   data=request.finetune_data, out=pruned_file)
    if request.finetune_data is None:
        return PrunedModel(pruned, pruned_file, record)
    report_stage(progress, "fine-tune (distilling from the unpruned model)")
    outcome = _finetune(name, pruned_file, request, Path(out_dir) / f"{stem}-ft.safetensors", progress)
    record["finetune"] = {**outcome.record, "weights": outcome.out.name, "sha256": sha256_file(outcome.out)}
    from deploykit.pipeline.weights import build_model

    return PrunedModel(build_model(name, outcome.out), outcome.out, record)


def prune_to_file(name: str, model: nn.Module, parent_weights: Path | None, preprocess: Preprocess,
                  config: PruneConfig, *, data: Path | None, out: Path) -> tuple[nn.Module, dict]:
    """Prune `model` (zoo model `name`, weights from `parent_weights`), write the pruned weights with their
    structure and pruning record to `out`; (pruned model, record with channels, MACs and params)."""
    from deploykit.pipeline.finetune import pruned_metadata, save_weights
    from deploykit.profile.cost import count_cost

    config = replace(config, input_size=preprocess.input_size)
    example, labels = _example(config, preprocess, data)
    pruned = prune_channels(model, example, **_options(config), labels=labels).eval()
    parent = str(Path(parent_weights).resolve()) if parent_weights else None
    prune_record = {"config": asdict(config), "parent_weights": parent,
                    "parent_sha256": sha256_file(Path(parent_weights)) if parent_weights else "random-init"}
    save_weights(out, pruned, pruned_metadata(pruned, name, prune_record))
    before, after = count_cost(model, preprocess.input_size), count_cost(pruned, preprocess.input_size)
    record = {**prune_record, "channels": channel_counts(pruned), "macs": {"before": before.macs, "after": after.macs},
              "params": {"before": before.params, "after": after.params}, "pruned_weights": Path(out).name,
              "finetune": None}
    return pruned, record


def _options(config: PruneConfig) -> dict:
    return {"ratio": config.ratio, "target_macs": config.target_macs, "importance": config.importance,
            "round_to": config.round_to, "ignore": config.ignore}


def _finetune(name: str, pruned_file: Path, request: PruneRequest, out: Path, progress):
    from deploykit.pipeline.finetune import FLOAT_TEACHER, FinetuneRequest, finetune

    ft = FinetuneRequest(model=name, data=request.finetune_data, out=out,
                         config=request.finetune, weights=pruned_file, teacher=FLOAT_TEACHER,
                         threads=request.threads)
    return finetune(ft, progress=progress)


def _example(config: PruneConfig, preprocess: Preprocess, data: Path | None):
    """Tracing input; for taylor a labelled batch of real training images (a seeded sample of `data`)."""
    size = preprocess.input_size
    if config.importance != "taylor":
        return torch.zeros(1, preprocess.num_channels, size, size), None
    if data is None:
        raise DeployKitError("taylor importance needs labelled images",
                             fix="pass the training data (--data / --finetune-data): a batch of it scores the channels")
    from deploykit.data import batches, open_dataset
    from deploykit.pipeline.evaluate import resolve_data

    dataset = open_dataset(resolve_data(data))
    images, labels = next(batches(dataset, preprocess, TAYLOR_BATCH, limit=TAYLOR_BATCH))
    if labels is None:
        raise DeployKitError("taylor importance needs labelled images", fix="point --finetune-data at class folders")
    return torch.from_numpy(images), torch.from_numpy(labels)


def channel_counts(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv (per-layer widths, for the manifest)."""
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
