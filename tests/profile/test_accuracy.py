"""Accuracy counting against oracles whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from deploykit.core.errors import DeployKitError
from deploykit.core.preprocess import Preprocess
from deploykit.data.idx import ArrayDataset
from deploykit.pipeline.evaluate import evaluate
from deploykit.profile.accuracy import count_hits, logits_accuracy

RAW = Preprocess(input_size=2, resize=None, channels="L", mean=(0.0,), std=(1.0,), scale=1.0)


def labelled(labels: list[int]) -> ArrayDataset:
    """Each image is filled with its label, so a predict function can read the answer off the pixels."""
    images = np.stack([np.full((2, 2), label, dtype=np.uint8) for label in labels])
    return ArrayDataset(images, np.asarray(labels), origin="synthetic")


def ranking_true_label(rank: int, num_classes: int):
    """Logits that put the true label at position `rank` (0 = top)."""

    def predict(batch: np.ndarray) -> np.ndarray:
        truth = batch[:, 0, 0, 0].astype(int)
        logits = np.zeros((len(batch), num_classes), dtype=np.float32)
        for row, label in enumerate(truth):
            others = [c for c in range(num_classes) if c != label]
            order = others[:rank] + [label] + others[rank:]
            logits[row, order] = np.arange(num_classes, 0, -1)
        return logits

    return predict


@pytest.mark.parametrize("rank, top1, top5", [(0, 1.0, 1.0), (2, 0.0, 1.0), (5, 0.0, 0.0)])
def test_top1_top5(rank, top1, top5):
    result = evaluate(ranking_true_label(rank, 10), labelled(list(range(10)) * 3), RAW, batch_size=7)
    assert (result.top1, result.top5, result.n) == (top1, top5, 30)


def test_top5_needs_five_classes():
    result = evaluate(ranking_true_label(0, 3), labelled([0, 1, 2]), RAW)
    assert result.top1 == 1.0 and result.top5 is None


def test_progress_and_limit():
    seen = []
    result = evaluate(ranking_true_label(0, 10), labelled(list(range(10)) * 10), RAW, limit=25, batch_size=10,
                      progress=lambda done, total: seen.append((done, total)))
    assert result.n == 25 and seen == [(10, 25), (20, 25), (25, 25)]


def test_head_shaped_outputs_are_flattened():
    predict = ranking_true_label(0, 10)
    result = evaluate(lambda x: predict(x)[:, :, None, None], labelled([1, 2]), RAW)
    assert result.top1 == 1.0


def test_labels_beyond_the_logits_are_an_error():
    with pytest.raises(DeployKitError, match="outside the model's 5 classes"):
        evaluate(lambda x: np.zeros((len(x), 5)), labelled([7]), RAW)


def test_unlabelled_data_is_an_error():
    dataset = ArrayDataset(np.zeros((2, 2, 2), dtype=np.uint8), None, origin="synthetic")
    with pytest.raises(DeployKitError, match="no labels"):
        evaluate(ranking_true_label(0, 5), dataset, RAW)


def test_ties_rank_the_lower_class_first():
    logits = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    assert count_hits(logits, np.array([0, 2])) == (1, 2)


def test_collected_logits_count_like_a_streamed_evaluation():
    """Profiling and sweeps collect outputs first (to compare them with the float original's): the same count."""
    labels = np.array(list(range(10)) * 3)
    streamed = evaluate(ranking_true_label(2, 10), labelled(list(labels)), RAW, batch_size=7)
    images = np.broadcast_to(labels[:, None, None, None], (30, 1, 2, 2)).astype(np.float32)
    collected = logits_accuracy(ranking_true_label(2, 10)(images)[:, :, None, None], labels)
    assert collected == streamed and (collected.top1, collected.top5) == (0.0, 1.0)


def test_collected_logits_with_a_label_beyond_them_are_an_error():
    with pytest.raises(DeployKitError, match="outside the model's 5 classes"):
        logits_accuracy(np.zeros((1, 5)), np.array([7]))
