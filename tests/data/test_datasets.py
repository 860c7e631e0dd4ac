"""Format detection and parsing: the real data sets, and small synthetic folders for the edge cases."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deploykit.core.errors import DeployKitError
from deploykit.data.datasets import FileDataset, open_dataset
from deploykit.data.idx import ArrayDataset, read_idx

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_images(folder: Path, names: list[str], size: int = 8) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (size, size), (i * 20 % 256, 0, 0)).save(folder / name)


def write_idx(path: Path, array: np.ndarray) -> Path:
    """IDX: two zero bytes, type code 0x08 (ubyte), ndim, big-endian dims, raw data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())
    return path


# --- the real data ----------------------------------------------------------------------------------

def test_mnist_idx(data_dir):
    dataset = open_dataset(data_dir / "mnist")
    assert isinstance(dataset, ArrayDataset) and len(dataset) == 10_000
    image, label = dataset[0]
    assert label == 7 and image.size == (28, 28) and image.mode == "L"


def test_imagenet_list(data_dir):
    dataset = open_dataset(data_dir / "imagenet_val1300")
    assert isinstance(dataset, FileDataset) and len(dataset) == 1_300
    assert dataset.files[0].name == "ILSVRC2012_val_00000347.JPEG" and dataset.labels[0] == 472
    assert all(0 <= label < 1000 for label in dataset.labels)


def test_cifar10_image_folder(data_dir):
    dataset = open_dataset(data_dir / "cifar10" / "test")
    assert len(dataset) == 10_000
    assert dataset.classes == CIFAR_CLASSES  # sorted folder names are the standard label order
    assert Counter(dataset.labels) == {label: 1000 for label in range(10)}
    image, label = dataset[9_999]
    assert label == 9 and image.size == (32, 32)


def test_loose_images_are_unlabelled(data_dir):
    dataset = open_dataset(data_dir / "cifar10_lossless")
    assert len(dataset) == 20 and dataset[0][1] is None


def test_parent_of_splits_is_not_a_two_class_dataset(data_dir):
    with pytest.raises(DeployKitError, match="no images") as info:
        open_dataset(data_dir / "cifar10")
    assert "test" in info.value.fix and "train" in info.value.fix


# --- synthetic folders ------------------------------------------------------------------------------

def test_image_folder_labels_follow_sorted_class_names(tmp_path):
    write_images(tmp_path / "zebra", ["a.png", "b.png"])
    write_images(tmp_path / "ant", ["c.jpg"])
    dataset = open_dataset(tmp_path)
    assert dataset.classes == ["ant", "zebra"] and dataset.labels == [0, 1, 1]


def test_list_format(tmp_path):
    write_images(tmp_path / "data", ["x.png", "y.png"])
    (tmp_path / "dataset.txt").write_text("./data/x.png, 3\n./data/y.png, 0\n\n")
    dataset = open_dataset(tmp_path)
    assert dataset.labels == [3, 0] and dataset[1][0].size == (8, 8)


def test_list_format_errors_name_the_line_and_the_missing_file(tmp_path):
    write_images(tmp_path / "data", ["x.png"])
    (tmp_path / "dataset.txt").write_text("./data/x.png, 3\n./data/x.png three\n")
    with pytest.raises(DeployKitError, match=r"dataset.txt:2"):
        open_dataset(tmp_path)
    (tmp_path / "dataset.txt").write_text("./data/x.png, 3\n./data/gone.png, 1\n")
    with pytest.raises(DeployKitError, match="gone.png"):
        open_dataset(tmp_path)


def test_idx_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 6, 7))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(5))
    dataset = open_dataset(tmp_path)
    assert len(dataset) == 5 and dataset[4][1] == 4
    np.testing.assert_array_equal(np.asarray(dataset[2][0]), images[2])


def test_idx_without_labels_and_truncated(tmp_path):
    path = write_idx(tmp_path / "x-images-idx3-ubyte.gz", np.zeros((3, 4, 4)))
    assert open_dataset(tmp_path)[0][1] is None
    with gzip.open(path) as f:
        raw = f.read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-5])
    with pytest.raises(DeployKitError, match="truncated"):
        read_idx(path)


def test_missing_path(tmp_path):
    with pytest.raises(DeployKitError, match="dataset not found"):
        open_dataset(tmp_path / "nope")


def test_empty_folder(tmp_path):
    with pytest.raises(DeployKitError, match="empty"):
        open_dataset(tmp_path)


def test_folder_without_images(tmp_path):
    (tmp_path / "notes.txt.bak").write_text("hello")
    with pytest.raises(DeployKitError, match="no images or recognisable dataset format"):
        open_dataset(tmp_path)


def test_empty_class_folder_would_shift_labels(tmp_path):
    write_images(tmp_path / "cat", ["a.png"])
    (tmp_path / "bird").mkdir()
    with pytest.raises(DeployKitError, match="bird holds no images"):
        open_dataset(tmp_path)


def test_loose_images_beside_class_folders(tmp_path):
    write_images(tmp_path / "cat", ["a.png"])
    write_images(tmp_path, ["stray.png"])
    with pytest.raises(DeployKitError, match="mixes loose images"):
        open_dataset(tmp_path)


def test_corrupt_image_names_the_file(tmp_path):
    write_images(tmp_path / "cat", ["good.png"])
    (tmp_path / "cat" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    dataset = open_dataset(tmp_path)
    with pytest.raises(DeployKitError, match=r"cannot read image .*bad\.jpg"):
        dataset[0]  # sorted: bad.jpg before good.png


def test_truncated_jpeg_names_the_file(tmp_path):
    write_images(tmp_path / "cat", ["a.jpg"], size=64)
    data = (tmp_path / "cat" / "a.jpg").read_bytes()
    (tmp_path / "cat" / "a.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DeployKitError, match=r"a\.jpg"):
        open_dataset(tmp_path)[0]
