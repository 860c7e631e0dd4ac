"""Calibration images: deterministic, disjoint ranges / held-out slices, a record that reproduces them,
exclusion from an evaluation, and one clear error for every bad folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deploykit.core.errors import DeployKitError
from deploykit.core.preprocess import Preprocess
from deploykit.data.calibration import MIN_SIZE, CalibrationConfig, exclude_calibration, open_calibration
from deploykit.data.datasets import open_dataset

RAW = Preprocess(input_size=4, resize=None, channels="L", mean=(0.0,), std=(1.0,), scale=1.0)


def image_folder(root, n: int, classes: int = 0):
    """n 4x4 grey PNGs whose pixel value is their index; in `classes` class folders if given."""
    for i in range(n):
        folder = root / f"c{i % classes}" if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4), i % 256).save(folder / f"{i:04d}.png")
    return root


def pixel_ids(subset) -> set[int]:
    return {int(np.asarray(subset[i][0])[0, 0]) for i in range(len(subset))}


def test_ranges_and_holdout_are_disjoint_deterministic_and_a_third_held_out(tmp_path):
    folder = image_folder(tmp_path, 200)
    calib = open_calibration(CalibrationConfig(folder, size=60))
    again = open_calibration(CalibrationConfig(folder, size=60))
    assert (len(calib.ranges), len(calib.holdout)) == (40, 20)
    assert not pixel_ids(calib.ranges) & pixel_ids(calib.holdout)
    assert pixel_ids(calib.ranges) == pixel_ids(again.ranges) and pixel_ids(calib.holdout) == pixel_ids(again.holdout)
    other_seed = open_calibration(CalibrationConfig(folder, size=60, seed=1))
    assert pixel_ids(other_seed.ranges) != pixel_ids(calib.ranges)
    batches = list(calib.range_batches(RAW, 16))
    assert [len(b) for b in batches] == [16, 16]  # full batches only: the 8 left over are dropped
    images, labels = next(iter(calib.holdout_batches(RAW)))
    assert images.shape == (20, 1, 4, 4) and labels is None


def test_split_calibrates_within_the_first_part_only(tmp_path):
    folder = image_folder(tmp_path, 130, classes=5)
    calib = open_calibration(CalibrationConfig(folder, split=30))  # size defaults to the whole split
    assert len(calib.drawn) == 30 and len(calib.excluded()) == 30
    assert pixel_ids(calib.ranges) | pixel_ids(calib.holdout) == pixel_ids(calib.pool)
    record = calib.record()
    assert record["split"] == 30 and record["size"] == 30 and record["images_in_folder"] == 130
    rest, note = exclude_calibration(open_dataset(folder), folder, record)
    assert len(rest) == 100 and "30 calibration images excluded" in note
    assert not pixel_ids(rest) & pixel_ids(calib.pool)


def test_without_split_only_the_drawn_images_are_excluded(tmp_path):
    folder = image_folder(tmp_path, 100)
    calib = open_calibration(CalibrationConfig(folder, size=40))
    rest, _ = exclude_calibration(open_dataset(folder), folder, calib.record())
    assert len(rest) == 60 and not pixel_ids(rest) & pixel_ids(calib.drawn)


def test_another_folder_is_evaluated_whole_and_a_changed_folder_is_refused(tmp_path):
    folder = image_folder(tmp_path / "train", 100)
    record = open_calibration(CalibrationConfig(folder, size=40)).record()
    other = image_folder(tmp_path / "test", 50)
    same, note = exclude_calibration(open_dataset(other), other, record)
    assert len(same) == 50 and "nothing excluded" in note
    image_folder(folder, 101)  # one more image: positions no longer mean the same images
    with pytest.raises(DeployKitError, match="changed since the export"):
        exclude_calibration(open_dataset(folder), folder, record)


@pytest.mark.parametrize("case, message", [
    ("empty", "dataset folder is empty"),
    ("missing", "dataset not found"),
    ("too few", "calibration needs 512 images but"),
    ("size below minimum", "--calib-size 8 is too few"),
    ("split too large", "--calib-split 500 does not leave images"),
])
def test_bad_folders_fail_with_one_message_naming_calib(tmp_path, case, message):
    folder = tmp_path / "calib"
    folder.mkdir()
    config = {"empty": lambda: CalibrationConfig(folder),
              "missing": lambda: CalibrationConfig(tmp_path / "nope"),
              "too few": lambda: CalibrationConfig(image_folder(folder, 30)),
              "size below minimum": lambda: CalibrationConfig(image_folder(folder, 30), size=8),
              "split too large": lambda: CalibrationConfig(image_folder(folder, 30), split=500)}[case]()
    with pytest.raises(DeployKitError, match=message) as info:
        open_calibration(config)
    assert "--data" not in str(info.value)


def test_too_few_images_names_the_counts_and_the_fix(tmp_path):
    folder = image_folder(tmp_path, MIN_SIZE + 6)
    with pytest.raises(DeployKitError) as info:
        open_calibration(CalibrationConfig(folder, size=100))
    assert f"holds {MIN_SIZE + 6}" in info.value.message and f"--calib-size {MIN_SIZE + 6}" in info.value.fix


def test_an_unreadable_image_fails_when_decoded_with_its_name(tmp_path):
    folder = image_folder(tmp_path, 40)
    (folder / "0007.png").write_bytes(b"not a png at all")
    calib = open_calibration(CalibrationConfig(folder, size=40))
    with pytest.raises(DeployKitError, match="0007.png"):
        list(calib.range_batches(RAW, 1)) + list(calib.holdout_batches(RAW))


def test_real_cifar_train_record(data_dir):
    calib = open_calibration(CalibrationConfig(data_dir / "cifar10" / "train", size=64))
    record = calib.record()
    assert record["images_in_folder"] == 50_000 and (record["ranges"], record["holdout"]) == (43, 21)
    labels = np.concatenate([y for _, y in calib.holdout_batches(Preprocess(input_size=32, resize=None))])
    assert len(set(labels.tolist())) >= 5  # a seeded subset spans the classes, not the first folder
