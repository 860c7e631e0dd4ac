"""Top-1 / top-5 accuracy of any predict function (torch model, ONNX Runtime session, device agent) over
batches of images, or of logits already collected. The one place accuracy is counted: evaluation, profiling
and sweeps all end here. Opening a dataset and batching it is the caller's (`pipeline.evaluate.evaluate`):
this layer measures what it is given. Reports progress by callback: library code never prints."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import numpy as np

from deploykit.core.errors import DeployKitError

Predict = Callable[[np.ndarray], np.ndarray]
Progress = Callable[[int, int], None]  # (items done, items in total)
Batches = Iterable[tuple[np.ndarray, "np.ndarray | None"]]  # (NCHW float32 images, labels or None)
TOP_K = 5


@dataclass(frozen=True)
class EvalResult:
    """Fractions in [0, 1]; top5 is None when the model has fewer than five classes."""

    top1: float
    top5: float | None
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def accuracy(predict: Predict, batches: Batches, *, total: int, progress: Progress | None = None) -> EvalResult:
    """Accuracy of `predict` (NCHW float32 -> logits N x classes) over labelled `batches` of `total` images."""
    hits1 = hits5 = done = num_classes = 0
    for images, labels in batches:
        if labels is None:
            raise DeployKitError("the dataset has no labels, so accuracy cannot be measured",
                                 fix="evaluate on a labelled set (class folders, dataset.txt or MNIST IDX)")
        logits = as_logits(predict(images), len(images))
        num_classes = logits.shape[1]
        top1, top5 = count_hits(logits, labels)
        hits1, hits5, done = hits1 + top1, hits5 + top5, done + len(labels)
        if progress is not None:
            progress(done, total)
    if done == 0:
        raise DeployKitError("nothing to evaluate: the dataset is empty", fix="check the --data path")
    return _result(hits1, hits5, done, num_classes)


def logits_accuracy(logits: np.ndarray, labels: np.ndarray) -> EvalResult:
    """Accuracy of outputs already collected (one row per label), e.g. to compare them with others too."""
    logits = as_logits(logits, len(labels))
    return _result(*count_hits(logits, labels), len(labels), logits.shape[1])


def count_hits(logits: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    """(top-1 hits, top-5 hits); a label outside the classes is an error. Ties rank the lower class index
    first, like argmax."""
    _check_labels(labels, logits.shape[1])
    ranked = np.argsort(-logits, axis=1, kind="stable")[:, :TOP_K]
    top1 = int((ranked[:, 0] == labels).sum())
    top5 = int((ranked == labels[:, None]).any(axis=1).sum())
    return top1, top5


def _result(hits1: int, hits5: int, n: int, num_classes: int) -> EvalResult:
    return EvalResult(hits1 / n, hits5 / n if num_classes >= TOP_K else None, n)


def as_logits(output: np.ndarray, batch: int) -> np.ndarray:
    """Flatten (N, C, 1, 1)-style heads to float32 (N, C); anything else that is not N rows is an error."""
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
