"""MNIST's IDX files, parsed directly (numpy + gzip): no torchvision, and no trust in file checksums,
which differ between re-gzipped copies of the same data."""

from __future__ import annotations

import hashlib

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from deploykit.core.errors import DeployKitError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class ArrayDataset:
    """Images held in memory as a uint8 array (N, H, W), with optional labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, origin: str):
        if labels is not None and len(labels) != len(images):
            raise DeployKitError(f"{origin}: {len(images)} images but {len(labels)} labels",
                                 fix="use the labels file that belongs to these images")
        self.images = images
        self.labels = labels
        self.origin = origin

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int | None]:
        label = None if self.labels is None else int(self.labels[index])
        return Image.fromarray(self.images[index]), label  # uint8 (H, W) decodes as mode "L"

    def source(self, index: int) -> str:
        return f"{self.origin} record {index}"

    def fingerprint(self, index: int) -> str:
        label = None if self.labels is None else int(self.labels[index])
        return f"{hashlib.sha256(np.ascontiguousarray(self.images[index]).tobytes()).hexdigest()}:{label}"


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as an array of its declared type and shape."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DeployKitError(f"{path} is not an IDX file (bad magic number)", fix="re-download it")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DeployKitError(f"{path} is truncated or padded: shape {shape} needs {expected} bytes "
                             f"of data, found {len(raw) - header}", fix="re-download it")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DeployKitError(f"cannot read {path}: {exc}", fix="re-download it") from exc


def find_idx_pair(folder: Path, images: Path | None = None) -> tuple[Path, Path | None] | None:
    """(images file, matching labels file or None) in `folder`; None when there is no IDX image file."""
    if images is None:
        candidates = sorted(p for p in folder.iterdir() if _is_idx(p, "idx3-ubyte"))
        if not candidates:
            return None
        if len(candidates) > 1:
            raise DeployKitError(f"{folder} holds several IDX image files: {', '.join(p.name for p in candidates)}",
                                 fix="point --data at one of the *-images-idx3-ubyte files")
        images = candidates[0]
    labels = images.with_name(images.name.replace("images-idx3", "labels-idx1"))
    return images, labels if labels.is_file() else None


def mnist_dataset(images: Path, labels: Path | None) -> ArrayDataset:
    pixels = read_idx(images)
    if pixels.ndim != 3 or pixels.dtype != np.uint8:
        raise DeployKitError(f"{images} holds {pixels.dtype} of shape {pixels.shape}, not uint8 images",
                             fix="point --data at an *-images-idx3-ubyte file")
    targets = None if labels is None else read_idx(labels).astype(np.int64)
    return ArrayDataset(pixels, targets, origin=images.name)


def _is_idx(path: Path, kind: str) -> bool:
    return path.is_file() and (path.name.endswith(kind) or path.name.endswith(kind + ".gz"))
