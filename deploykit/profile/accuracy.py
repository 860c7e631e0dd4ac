"""Top-1 / top-5 accuracy of any predict function (torch model, ONNX Runtime session, device agent)
over a dataset, fed through the one shared preprocessing. Reports progress by callback: library
code never prints."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from deploykit.core.errors import DeployKitError
from deploykit.core.preprocess import Preprocess
from deploykit.data.datasets import Dataset
from deploykit.data.loader import DEFAULT_SEED, batches, sample_indices

Predict = Callable[[np.ndarray], np.ndarray]
Progress = Callable[[int, int], None]  # (items done, items in total)
TOP_K = 5


@dataclass(frozen=True)
class EvalResult:
    """Fractions in [0, 1]; top5 is None when the model has fewer than five classes."""

    top1: float
    top5: float | None
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(predict: Predict, dataset: Dataset, preprocess: Preprocess, *, limit: int | None = None,
             batch_size: int = 32, progress: Progress | None = None, seed: int = DEFAULT_SEED,
             workers: int = 2) -> EvalResult:
    """Accuracy of `predict` (NCHW float32 -> logits N x classes) on `dataset` (or a seeded subset)."""
    total = len(sample_indices(len(dataset), limit, seed))
    hits1 = hits5 = done = 0
    num_classes = 0
    for images, labels in batches(dataset, preprocess, batch_size, limit=limit, seed=seed, workers=workers):
        if labels is None:
            raise DeployKitError("the dataset has no labels, so accuracy cannot be measured",
                                 fix="evaluate on a labelled set (class folders, dataset.txt or MNIST IDX)")
        logits = _as_logits(predict(images), len(images))
        num_classes = logits.shape[1]
        _check_labels(labels, num_classes)
        top1, top5 = count_hits(logits, labels)
        hits1, hits5, done = hits1 + top1, hits5 + top5, done + len(labels)
        if progress is not None:
            progress(done, total)
    if done == 0:
        raise DeployKitError("nothing to evaluate: the dataset is empty", fix="check the --data path")
    return EvalResult(hits1 / done, hits5 / done if num_classes >= TOP_K else None, done)


def count_hits(logits: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    """(top-1 hits, top-5 hits). Ties rank the lower class index first, like argmax."""
    ranked = np.argsort(-logits, axis=1, kind="stable")[:, :TOP_K]
    top1 = int((ranked[:, 0] == labels).sum())
    top5 = int((ranked == labels[:, None]).any(axis=1).sum())
    return top1, top5


def _as_logits(output: np.ndarray, batch: int) -> np.ndarray:
    """Flatten (N, C, 1, 1)-style heads to (N, C); anything else that is not N rows is an error."""
    output = np.asarray(output)
    if output.ndim < 1 or output.shape[0] != batch:
        raise DeployKitError(f"the model returned shape {output.shape} for a batch of {batch}",
                             fix="the first output must be class scores, one row per image")
    return output.reshape(batch, -1).astype(np.float32, copy=False)


def _check_labels(labels: np.ndarray, num_classes: int) -> None:
    outside = labels[(labels < 0) | (labels >= num_classes)]
    if outside.size:
        raise DeployKitError(f"label {int(outside[0])} is outside the model's {num_classes} classes",
                             fix="check that the dataset and the model use the same class list")
