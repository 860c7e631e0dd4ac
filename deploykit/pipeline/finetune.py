"""model (+ weights, maybe pruned) + data -> trained weights file: the `deploykit finetune` pipeline.

The weights file written at the end is a plain safetensors state_dict that `--weights` loads anywhere,
with three metadata entries: `deploykit_structure` (a pruned model's layer shapes, see zoo/structure.py),
`deploykit_prune` (the pruning config and parent, carried over from the input weights) and
`deploykit_training` (config, per-epoch history, wall time, teacher, data, evaluation). The resumable
state lives beside it in `<out stem>.resume.safetensors` (see training/state.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import nn

from deploykit import zoo
from deploykit.core.errors import DeployKitError
from deploykit.core.fsutil import atomic_path, sha256_file
from deploykit.core.options import check_choices, choice
from deploykit.core.paths import cache_dir
from deploykit.core.publish import check_output_file
from deploykit.data import open_dataset
from deploykit.data.loader import sample_indices
from deploykit.data.pixels import load_pixels
from deploykit.pipeline.weights import build_model
from deploykit.training import TrainConfig, TrainResult, train
from deploykit.training.seeding import seeded
from deploykit.zoo.structure import STRUCTURE_KEY, apply_structure, describe_structure, read_metadata

SaveDtype = Literal["float32", "float16"]
PRUNE_KEY = "deploykit_prune"
TRAINING_KEY = "deploykit_training"
FLOAT_TEACHER = "float"


@dataclass(frozen=True)
class FinetuneRequest:
    model: str
    data: Path
    out: Path
    config: TrainConfig = field(default_factory=TrainConfig)
    weights: Path | None = None  # None: train from a seeded random init
    teacher: str | None = None  # None, "float" (the unpruned parent) or a weights path
    eval_data: Path | None = None
    limit: int | None = None  # a seeded subset of the training data (quick runs, tests)
    save_every: int | None = None
    stop_after_epochs: int | None = None
    save_dtype: SaveDtype = "float32"  # for the file at --out only
    threads: int = 1

    def __post_init__(self) -> None:
        check_choices(self, what="finetune")


@dataclass
class FinetuneOutcome:
    out: Path
    result: TrainResult
    eval_top1: float | None
    record: dict


def resume_path(out: Path) -> Path:
    out = Path(out)
    return out.with_name(out.name.removesuffix(".safetensors") + ".resume.safetensors")


def finetune(request: FinetuneRequest, progress: Callable[[dict], None] | None = None) -> FinetuneOutcome:
    from deploykit.pipeline.evaluate import resolve_data

    check_output_file(request.out, ".safetensors")
    finished = _finished_before(request)
    if finished is not None:
        return finished
    torch.set_num_threads(request.threads)  # the CLI process is ours; the count is an explicit argument
    entry = zoo.get(request.model)
    with seeded(request.config.seed):  # a from-scratch init is part of the seeded run
        model, metadata = load_student(request.model, request.weights)
        teacher = load_teacher(request.model, request.teacher, request.weights, metadata)
    data = _pixels(resolve_data(request.data), entry.preprocess, request.limit, request.config.seed, progress)
    info = {"structure": metadata.get(STRUCTURE_KEY), "weights_sha256": _sha(request.weights),
            "teacher": None if teacher is None else teacher[1]}
    result = train(model, data, entry.preprocess, request.config, checkpoint=resume_path(request.out),
                   teacher=None if teacher is None else teacher[0], info=info, save_every=request.save_every,
                   stop_after_epochs=request.stop_after_epochs, progress=progress)
    if result.stopped_early:
        return FinetuneOutcome(request.out, result, None, {})
    top1 = _evaluate(result.model, request, entry.preprocess, progress) if request.eval_data else None
    record = training_record(request, result, top1, info, n_train=len(data))
    save_weights(request.out, result.model, {**_carried(metadata), TRAINING_KEY: json.dumps(record)},
                 dtype=request.save_dtype)
    resume_path(request.out).unlink(missing_ok=True)  # finished: the weights file is the result
    return FinetuneOutcome(request.out, result, top1, record)


def _finished_before(request: FinetuneRequest) -> FinetuneOutcome | None:
    """The outcome of this same fine-tune when an earlier run finished it (its weights at `out`, no resume
    state left), so a rerun of the command (or of `export --prune --finetune-data`) does not train again."""
    if not request.out.is_file() or resume_path(request.out).exists():
        return None
    record = json.loads(read_metadata(request.out).get(TRAINING_KEY) or "null")
    same = {"config": json.loads(json.dumps(request.config.to_dict())), "weights_sha256": _sha(request.weights),
            "data": str(request.data), "limit": request.limit,
            "eval_data": None if request.eval_data is None else str(request.eval_data)}
    if not isinstance(record, dict) or any(record.get(key) != value for key, value in same.items()):
        return None
    result = TrainResult(build_model(request.model, request.out).eval(), record["history"], None, False)
    return FinetuneOutcome(request.out, result, record.get("eval_top1"), record)


def load_student(name: str, weights: Path | None) -> tuple[nn.Module, dict[str, str]]:
    """The model to train (thinned to a pruned structure stored with the weights; a random init without
    weights) and the weights' metadata."""
    metadata = read_metadata(weights) if weights is not None else {}
    return build_model(name, weights), metadata


def load_teacher(name: str, teacher: str | None, weights: Path | None,
                 metadata: dict[str, str]) -> tuple[nn.Module, dict] | None:
    """(teacher model in eval mode, description) or None. "float" is the unpruned parent of `weights`
    (recorded when it was pruned), else `weights` itself if unpruned, else the zoo's released weights."""
    if teacher is None:
        return None
    path = Path(teacher) if teacher != FLOAT_TEACHER else _float_parent(weights, metadata)
    if path is not None and STRUCTURE_KEY in read_metadata(path):
        raise DeployKitError(f"the teacher {path} is itself pruned", fix="distil from the unpruned float model")
    if path is None and zoo.get(name).default_weights is None:
        raise DeployKitError(f"--teacher float: no unpruned weights known for {name}",
                             fix="pass --teacher PATH to the unpruned float model's weights")
    model = build_model(name, path, pretrained=True)
    return model.eval(), {"weights": str(path) if path else "zoo default", "sha256": _sha(path)}


def _float_parent(weights: Path | None, metadata: dict[str, str]) -> Path | None:
    """The unpruned weights `weights` came from; None means the zoo's released weights."""
    if PRUNE_KEY not in metadata:
        return weights
    parent = json.loads(metadata[PRUNE_KEY]).get("parent_weights")
    if parent and not Path(parent).is_file():
        raise DeployKitError(f"--teacher float: the unpruned parent {parent} recorded in {weights} is gone",
                             fix="pass --teacher PATH to the unpruned weights")
    return Path(parent) if parent else None


def _pixels(path: Path, preprocess, limit: int | None, seed: int, progress):
    dataset = open_dataset(path)
    if limit is not None:
        from deploykit.data import Subset

        dataset = Subset(dataset, sample_indices(len(dataset), limit, seed))
    report = None if progress is None else (lambda done, total: progress({"event": "decode", "done": done,
                                                                           "total": total}))
    return load_pixels(dataset, preprocess, cache=cache_dir(), progress=report)


def _evaluate(model: nn.Module, request: FinetuneRequest, preprocess, progress) -> float:
    from deploykit.pipeline.evaluate import evaluate, resolve_data

    model = model.eval().to(memory_format=torch.contiguous_format)

    def predict(batch):
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    report = None if progress is None else (lambda done, total: progress({"event": "eval", "done": done,
                                                                           "total": total}))
    dataset = open_dataset(resolve_data(request.eval_data))
    return evaluate(predict, dataset, preprocess, batch_size=200, progress=report, workers=request.threads).top1


def training_record(request: FinetuneRequest, result: TrainResult, top1: float | None, info: dict,
                    n_train: int) -> dict:
    return {"model": request.model, "config": request.config.to_dict(), "history": result.history,
            "train_seconds": round(result.seconds, 1), "threads": request.threads, "data": str(request.data),
            "n_train": n_train, "limit": request.limit, "weights_sha256": info["weights_sha256"],
            "teacher": info["teacher"], "eval_data": None if request.eval_data is None else str(request.eval_data),
            "eval_top1": top1, "torch": torch.__version__}


def _carried(metadata: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in metadata.items() if k in (STRUCTURE_KEY, PRUNE_KEY)}


def save_weights(path: Path, model: nn.Module, metadata: dict[str, str], *, dtype: SaveDtype = "float32") -> None:
    """`model`'s state_dict as safetensors, atomically; floating tensors cast to `dtype`."""
    from safetensors.torch import save_file

    choice(dtype, SaveDtype, option="save_dtype", what="weights file")
    check_output_file(path, ".safetensors")
    target = getattr(torch, dtype)
    state = {k: (v.to(target) if v.is_floating_point() else v).detach().contiguous()
             for k, v in model.state_dict().items()}
    with atomic_path(Path(path)) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def pruned_metadata(model: nn.Module, name: str, prune_record: dict) -> dict[str, str]:
    """Metadata for a freshly pruned model's weights file: its structure and how it was pruned."""
    structure = describe_structure(model, zoo.create(name, num_classes=_classes(model)), name)
    return {STRUCTURE_KEY: json.dumps(structure, sort_keys=True), PRUNE_KEY: json.dumps(prune_record)}


def _classes(model: nn.Module) -> int:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features


def _sha(path: Path | None) -> str | None:
    return None if path is None or not Path(path).is_file() else sha256_file(Path(path))


__all__ = ["FinetuneRequest", "FinetuneOutcome", "apply_structure", "finetune", "pruned_metadata", "resume_path",
           "save_weights"]
