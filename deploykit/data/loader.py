"""Datasets -> fixed-order float32 batches, decoded in a small thread pool (PIL releases the GIL).

A `limit` takes a seeded random subset rather than the first N items: folders are read class by
class, so the first 1,000 CIFAR-10 test images are all airplanes. The subset is then put back in
dataset order, so the same (limit, seed) always yields the same batches on every machine."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

import numpy as np

from deploykit.core.devices import DEFAULT_THREADS
from deploykit.core.errors import DeployKitError
from deploykit.core.preprocess import Preprocess
from deploykit.data.datasets import Dataset, Subset
from deploykit.data.preprocess import preprocess_image

DEFAULT_SEED = 0
Batch = tuple[np.ndarray, "np.ndarray | None"]


def sample_indices(size: int, limit: int | None, seed: int = DEFAULT_SEED) -> list[int]:
    """All indices in order, or `limit` of them drawn with `seed` and sorted."""
    if limit is None or limit >= size:
        return list(range(size))
    if limit <= 0:
        raise DeployKitError(f"limit must be positive, got {limit}", fix="pass --limit 1 or more")
    chosen = np.random.default_rng(seed).permutation(size)[:limit]
    return sorted(int(i) for i in chosen)


def split(dataset: Dataset, n_first: int, seed: int = DEFAULT_SEED) -> tuple[Subset, Subset]:
    """Two disjoint subsets: `n_first` seeded-random items (e.g. calibration) and all the rest."""
    if not 0 < n_first < len(dataset):
        raise DeployKitError(f"cannot split {n_first} items off a dataset of {len(dataset)}",
                             fix=f"ask for between 1 and {len(dataset) - 1}")
    order = np.random.default_rng(seed).permutation(len(dataset))
    return Subset(dataset, sorted(order[:n_first].tolist())), Subset(dataset, sorted(order[n_first:].tolist()))


def batches(dataset: Dataset, preprocess: Preprocess, batch_size: int, *, limit: int | None = None,
            seed: int = DEFAULT_SEED, workers: int = DEFAULT_THREADS) -> Iterator[Batch]:
    """(NCHW float32 batch, int64 labels or None) over the (sub)set; the last batch may be short.
    One batch is decoded ahead while the caller runs the model on the current one."""
    if batch_size <= 0:
        raise DeployKitError(f"batch size must be positive, got {batch_size}", fix="pass --batch-size 1 or more")
    indices = sample_indices(len(dataset), limit, seed)
    chunks = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="deploykit-decode") as pool:
        pending = _submit(pool, dataset, preprocess, chunks[0]) if chunks else []
        for k in range(len(chunks)):
            current = pending
            pending = _submit(pool, dataset, preprocess, chunks[k + 1]) if k + 1 < len(chunks) else []
            yield _collate([f.result() for f in current])


def _submit(pool: ThreadPoolExecutor, dataset: Dataset, preprocess: Preprocess, chunk: list[int]) -> list[Future]:
    return [pool.submit(load_item, dataset, preprocess, i) for i in chunk]


def load_item(dataset: Dataset, preprocess: Preprocess, index: int) -> tuple[np.ndarray, int | None]:
    """One preprocessed item; a failure names the file it came from."""
    image, label = dataset[index]
    try:
        return preprocess_image(image, preprocess), label
    except DeployKitError as exc:
        raise DeployKitError(f"{dataset.source(index)}: {exc.message}", fix=exc.fix) from exc


def _collate(items: list[tuple[np.ndarray, int | None]]) -> Batch:
    images = np.stack([image for image, _ in items])
    labels = [label for _, label in items]
    if any(label is None for label in labels):
        return images, None
    return images, np.asarray(labels, dtype=np.int64)
