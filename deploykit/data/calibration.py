"""Calibration images: a deterministic selection from a folder, split into the images that set
quantization ranges and a held-out slice that scores the result (and gates parity).

Shared by every int8 path (ONNX/ORT, Core ML, TensorRT): each calibrates on the same pixels through
the one preprocessing. The selection is reproducible from its record alone (folder, seed, sizes), so
`deploykit eval --exclude-calib` can leave exactly those images out of an evaluation.

    folder --(--calib-split N: the first N of a seeded shuffle)--> pool
    pool   --(--calib-size: a seeded subset)-->                    drawn
    drawn  --(a third, seeded)--> holdout;  the rest --> ranges
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from deploykit.core.errors import DeployKitError
from deploykit.core.preprocess import Preprocess
from deploykit.data.datasets import Dataset, Subset, open_dataset
from deploykit.data.loader import DEFAULT_SEED, Batch, batches, sample_indices, split

DEFAULT_SIZE = 512
MIN_SIZE = 24  # at least 16 images for ranges and 8 to score on
HOLDOUT_FRACTION = 1 / 3  # ranges settle within ~100 images; scoring is what needs numbers


@dataclass(frozen=True)
class CalibrationConfig:
    """Where calibration images come from and how many: `size` counts the held-out slice too."""

    path: Path
    size: int | None = None  # default: DEFAULT_SIZE, or the whole pool with `split`
    split: int | None = None  # calibrate within the first `split` of a seeded shuffle; the rest is for eval
    seed: int = DEFAULT_SEED

    @property
    def requested(self) -> int:
        if self.size is not None:
            return self.size
        return self.split if self.split is not None else DEFAULT_SIZE


@dataclass
class CalibrationSet:
    """The drawn images as two disjoint subsets, and the record that reproduces them."""

    config: CalibrationConfig
    dataset: Dataset
    pool: Subset
    drawn: Subset
    ranges: Subset
    holdout: Subset

    def range_batches(self, preprocess: Preprocess, batch_size: int) -> Iterator[np.ndarray]:
        """Full batches of range-setting images (a static-batch graph takes nothing else)."""
        for images, _ in batches(self.ranges, preprocess, batch_size):
            if len(images) == batch_size:
                yield images

    def holdout_batches(self, preprocess: Preprocess, batch_size: int = 32) -> Iterator[Batch]:
        return batches(self.holdout, preprocess, batch_size)

    def record(self) -> dict:
        """For the manifest: enough to redraw the same images and to check they are the same."""
        root = Path(self.config.path).resolve()
        return {"path": str(root), "images_in_folder": len(self.dataset), "split": self.config.split,
                "seed": self.config.seed, "size": len(self.drawn), "ranges": len(self.ranges),
                "holdout": len(self.holdout), "excluded_sha256": sources_digest(self.excluded(), root)}

    def excluded(self) -> Subset:
        """What an evaluation on the same folder must leave out: the whole --calib-split pool when one
        was declared, else the drawn images."""
        chosen = self.pool if self.config.split is not None else self.drawn
        return Subset(self.dataset, sorted(_folder_indices(chosen)))


def _folder_indices(subset: Subset) -> list[int]:
    """Indices into the folder's dataset of a (nested) subset's items."""
    indices = list(range(len(subset)))
    while isinstance(subset, Subset):
        indices = [subset.indices[i] for i in indices]
        subset = subset.dataset
    return indices


def open_calibration(config: CalibrationConfig) -> CalibrationSet:
    """Select the images; every failure names --calib. Images are decoded later, by the batches, and an
    unreadable one fails then with its file name."""
    return select(_open(Path(config.path).resolve()), config)


def select(dataset: Dataset, config: CalibrationConfig) -> CalibrationSet:
    pool = _pool(dataset, config)
    size = _check_size(config, len(pool))
    drawn = Subset(pool, sample_indices(len(pool), size, config.seed))
    n_holdout = max(8, round(size * HOLDOUT_FRACTION))
    ranges, holdout = split(drawn, size - n_holdout, config.seed)
    return CalibrationSet(config, dataset, pool, drawn, ranges, holdout)


def _open(path: Path) -> Dataset:
    try:
        return open_dataset(path)
    except DeployKitError as exc:
        fix = exc.fix.replace("--data", "--calib") if exc.fix else None
        raise DeployKitError(f"calibration images (--calib): {exc.message}", fix=fix) from exc


def _pool(dataset: Dataset, config: CalibrationConfig) -> Subset:
    if config.split is None:
        return Subset(dataset, range(len(dataset)))
    if not 0 < config.split < len(dataset):
        raise DeployKitError(f"--calib-split {config.split} does not leave images on both sides of "
                             f"{config.path} ({len(dataset)} images)",
                             fix=f"pass --calib-split between {MIN_SIZE} and {len(dataset) - 1}")
    return split(dataset, config.split, config.seed)[0]


def _check_size(config: CalibrationConfig, available: int) -> int:
    size = config.requested
    where = f"the first {config.split} (--calib-split) of {config.path}" if config.split else str(config.path)
    if size < MIN_SIZE:
        raise DeployKitError(f"--calib-size {size} is too few to calibrate and score int8",
                             fix=f"pass --calib-size {MIN_SIZE} or more (default {DEFAULT_SIZE})")
    if available < size:
        raise DeployKitError(f"calibration needs {size} images but {where} holds {available}",
                             fix=f"add images, or pass --calib-size {available}" if available >= MIN_SIZE
                             else f"add images: at least {MIN_SIZE} are needed")
    return size


# --- leaving calibration images out of an evaluation ---------------------------------------------

def exclude_calibration(dataset: Dataset, data_path: Path, record: dict) -> tuple[Dataset, str]:
    """(`dataset` without the images the record says were used to calibrate, a note saying what was
    done). Another folder shares nothing with the calibration set and is returned whole."""
    root = Path(record["path"])
    if Path(data_path).resolve() != root:
        return dataset, f"nothing excluded: the calibration images came from {root}"
    if len(dataset) != record["images_in_folder"]:
        raise _changed(root, f"it held {record['images_in_folder']} images then, {len(dataset)} now")
    config = CalibrationConfig(root, size=record["size"], split=record["split"], seed=record["seed"])
    excluded = select(dataset, config).excluded()
    if sources_digest(excluded, root) != record["excluded_sha256"]:
        raise _changed(root, "other images sit at the recorded positions")
    keep = sorted(set(range(len(dataset))) - set(excluded.indices))
    return Subset(dataset, keep), f"{len(excluded)} calibration images excluded, {len(keep)} evaluated"


def _changed(root: Path, why: str) -> DeployKitError:
    return DeployKitError(f"the calibration folder {root} changed since the export ({why}), so the "
                          "calibration images cannot be told apart", fix="re-export, or evaluate without --exclude-calib")


def sources_digest(subset: Subset, root: Path) -> str:
    """sha256 of the subset's sources relative to `root`: the same images in the same folder layout."""
    root = Path(root).resolve()
    digest = hashlib.sha256()
    for i in range(len(subset)):
        digest.update(_relative(subset.source(i), root).encode() + b"\n")
    return digest.hexdigest()


def _relative(source: str, root: Path) -> str:
    """A file's path below `root`; other sources (an MNIST record) as they are."""
    try:
        return str(Path(source).resolve().relative_to(root))
    except ValueError:
        return source
