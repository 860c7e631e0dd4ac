"""Deterministic batching: seeded subsets that span the classes, disjoint splits, clear failures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deploykit.core.errors import DeployKitError
from deploykit.core.preprocess import Preprocess
from deploykit.data.datasets import open_dataset
from deploykit.data.idx import ArrayDataset
from deploykit.data.loader import batches, sample_indices, split

RAW = Preprocess(input_size=4, resize=None, channels="L", mean=(0.0,), std=(1.0,), scale=1.0)


def class_sorted(n_classes: int = 10, per_class: int = 30) -> ArrayDataset:
    """Like a class-folder set: all of class 0 first. Each image's pixels equal its index mod 256."""
    labels = np.repeat(np.arange(n_classes), per_class)
    images = np.stack([np.full((4, 4), i % 256, dtype=np.uint8) for i in range(len(labels))])
    return ArrayDataset(images, labels, origin="synthetic")


def test_batches_shapes_order_and_short_last_batch():
    dataset = class_sorted()
    out = list(batches(dataset, RAW, 64))
    assert [len(x) for x, _ in out] == [64, 64, 64, 64, 44]
    images, labels = out[0]
    assert images.shape == (64, 1, 4, 4) and images.dtype == np.float32 and labels.dtype == np.int64
    assert images[5, 0, 0, 0] == 5 and labels[40] == 1


def test_limit_is_a_seeded_subset_across_classes():
    dataset = class_sorted()
    first = np.concatenate([y for _, y in batches(dataset, RAW, 16, limit=50)])
    again = np.concatenate([y for _, y in batches(dataset, RAW, 16, limit=50)])
    other = sample_indices(len(dataset), 50, seed=1)
    np.testing.assert_array_equal(first, again)
    assert len(first) == 50 and len(set(first.tolist())) >= 8  # the first 50 would be classes 0 and 1 only
    assert other != sample_indices(len(dataset), 50, seed=0)
    assert sample_indices(10, 3) == sorted(sample_indices(10, 3)) and sample_indices(5, 99) == list(range(5))


def test_split_is_disjoint_and_covers_everything():
    dataset = class_sorted()
    calibrate, rest = split(dataset, 30, seed=0)
    assert len(calibrate) == 30 and len(rest) == 270
    assert not set(calibrate.indices) & set(rest.indices)
    assert sorted(calibrate.indices + rest.indices) == list(range(300))
    assert split(dataset, 30, seed=0)[0].indices == calibrate.indices
    assert calibrate[0][1] == dataset[calibrate.indices[0]][1]
    with pytest.raises(DeployKitError):
        split(dataset, 300)


def test_unlabelled_batches_have_no_labels(tmp_path):
    for i in range(3):
        Image.new("L", (4, 4), i).save(tmp_path / f"{i}.png")
    (images, labels), = batches(open_dataset(tmp_path), RAW, 8)
    assert labels is None and images.shape == (3, 1, 4, 4)


def test_one_bad_image_in_a_set_names_the_file(tmp_path):
    (tmp_path / "cls").mkdir()
    for i in range(40):
        Image.new("L", (4, 4), i).save(tmp_path / "cls" / f"{i:03d}.png")
    (tmp_path / "cls" / "025.png").write_bytes(b"not a png")
    with pytest.raises(DeployKitError, match=r"025\.png"):
        list(batches(open_dataset(tmp_path), RAW, 8))


def test_preprocess_error_names_the_record():
    dataset = class_sorted()
    with pytest.raises(DeployKitError, match=r"synthetic record 0: image is 4x4, smaller"):
        next(batches(dataset, Preprocess(input_size=8, resize=None, channels="L", mean=(0.0,), std=(1.0,)), 4))
