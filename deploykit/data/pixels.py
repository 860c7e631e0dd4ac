"""Decoded pixels for training: every image decoded once into a uint8 array, cached on disk, then shuffled,
augmented and normalised batch by batch.

Decoding 50,000 CIFAR JPEGs takes longer than a training step on a small net, so an epoch must not re-decode.
The cache holds the output of `prepare_pixels` (the same geometry as evaluation) as a `.npy` file named
by a sha256 of the dataset's items (each one's source, file bytes and label) and the preprocessing, so a
changed dataset or recipe gets a new file, and so does an image edited in place. Hashing the files costs a
few seconds for 50,000 CIFAR images, far less than decoding them. It is derived data: delete it freely (default location: `deploykit.core.paths.cache_dir()`).

Batches are a pure function of (seed, epoch, step): the order is a permutation drawn from (seed, epoch) and
each batch's augmentation from (seed, epoch, step), so resuming at any step replays exactly the same data.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from deploykit.core.devices import DEFAULT_THREADS
from deploykit.core.errors import DeployKitError
from deploykit.core.fsutil import atomic_path
from deploykit.core.preprocess import Preprocess
from deploykit.data.augment import Augment, augment_batch
from deploykit.data.datasets import Dataset
from deploykit.data.preprocess import normalise_pixels, prepare_pixels

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PixelSet:
    """uint8 images (N, H, W, C) and int64 labels (N,), ready for `train_batches`."""

    pixels: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> "PixelSet":
        indices = np.asarray(indices)
        return PixelSet(self.pixels[indices], self.labels[indices])


def load_pixels(dataset: Dataset, preprocess: Preprocess, *, cache: Path | None = None, workers: int = DEFAULT_THREADS,
                progress: Progress | None = None) -> PixelSet:
    """All of `dataset` decoded (from the cache folder `cache` when it holds this dataset, else decoded now
    and stored there; `cache=None` never touches the disk)."""
    key = cache_key(dataset, preprocess, workers=workers)
    files = None if cache is None else (Path(cache) / f"pixels-{key}.npy", Path(cache) / f"labels-{key}.npy")
    if files is not None and all(f.is_file() for f in files):
        return PixelSet(np.load(files[0]), np.load(files[1]))
    pixel_set = decode_all(dataset, preprocess, workers=workers, progress=progress)
    if files is not None:
        for path, array in zip(files, (pixel_set.pixels, pixel_set.labels)):
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, array)
    return pixel_set


def cache_key(dataset: Dataset, preprocess: Preprocess, *, workers: int = DEFAULT_THREADS) -> str:
    """Full sha256 of every item's source and content (`Dataset.fingerprint`) and the preprocessing recipe."""
    digest = hashlib.sha256(json.dumps(preprocess.to_dict(), sort_keys=True).encode())
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="deploykit-hash") as pool:
        for index, fingerprint in enumerate(pool.map(dataset.fingerprint, range(len(dataset)))):
            digest.update(f"{dataset.source(index)}\0{fingerprint}\n".encode())
    return digest.hexdigest()


def decode_all(dataset: Dataset, preprocess: Preprocess, *, workers: int = DEFAULT_THREADS,
               progress: Progress | None = None) -> PixelSet:
    if len(dataset) == 0:
        raise DeployKitError("the training set is empty", fix="check the --data path")
    size, channels = preprocess.input_size, preprocess.num_channels
    pixels = np.empty((len(dataset), size, size, channels), dtype=np.uint8)
    labels = np.empty(len(dataset), dtype=np.int64)

    def load(index: int) -> None:
        image, label = dataset[index]
        if label is None:
            raise DeployKitError(f"{dataset.source(index)} has no label", fix="train on a labelled dataset")
        try:
            pixels[index] = prepare_pixels(image, preprocess)
        except DeployKitError as exc:
            raise DeployKitError(f"{dataset.source(index)}: {exc.message}", fix=exc.fix) from exc
        labels[index] = label

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="deploykit-decode") as pool:
        for done, _ in enumerate(pool.map(load, range(len(dataset))), 1):
            if progress is not None and (done % 1000 == 0 or done == len(dataset)):
                progress(done, len(dataset))
    return PixelSet(pixels, labels)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches only: a short last batch would give BatchNorm noisy statistics."""
    steps = n // batch_size
    if steps == 0:
        raise DeployKitError(f"{n} training images do not fill one batch of {batch_size}",
                             fix="use a smaller --batch-size or more data")
    return steps


def train_batches(pixel_set: PixelSet, preprocess: Preprocess, batch_size: int, *, augment: Augment, seed: int,
                  epoch: int, start_step: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(float32 NCHW, int64 labels) batches of one epoch, from step `start_step` on."""
    order = np.random.default_rng([seed, epoch]).permutation(len(pixel_set))
    for step in range(start_step, steps_per_epoch(len(pixel_set), batch_size)):
        chosen = order[step * batch_size:(step + 1) * batch_size]
        rng = np.random.default_rng([seed, epoch, step])
        images = augment_batch(pixel_set.pixels[chosen], augment, rng)
        yield normalise_pixels(images, preprocess), pixel_set.labels[chosen]
