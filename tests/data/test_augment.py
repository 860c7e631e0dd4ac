"""Training-only augmentation and the decoded-pixel cache: pure functions of their seed, and the split
preprocessing (prepare_pixels + normalise_pixels) equal to the one used for evaluation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deploykit.core.preprocess import Preprocess
from deploykit.data import open_dataset, preprocess_image
from deploykit.data.augment import NO_AUGMENT, Augment, augment_batch
from deploykit.data.pixels import PixelSet, load_pixels, steps_per_epoch, train_batches
from deploykit.data.preprocess import normalise_pixels, prepare_pixels

CIFAR = Preprocess(input_size=32, resize=None, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))


def _images(n: int = 4, size: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_no_augment_is_identity_and_input_untouched():
    images = _images()
    before = images.copy()
    assert np.array_equal(augment_batch(images, NO_AUGMENT, np.random.default_rng(1)), images)
    augment_batch(images, Augment(), np.random.default_rng(1))
    assert np.array_equal(images, before)


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    images = _images(n=64)
    out = augment_batch(images, Augment(pad=2, hflip=False), np.random.default_rng(3))
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    for i in range(len(images)):
        windows = [padded[i, t:t + 8, left:left + 8] for t in range(5) for left in range(5)]
        assert any(np.array_equal(out[i], w) for w in windows)
    assert (out == 0).any()  # some crops reach into the black border


def test_flip_mirrors_about_half_of_the_images():
    images = _images(n=200)
    out = augment_batch(images, Augment(pad=0, hflip=True), np.random.default_rng(4))
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
    assert 60 < sum(flipped) < 140
    assert all(f or np.array_equal(o, i) for f, o, i in zip(flipped, out, images))


def test_same_seed_same_batch():
    images = _images(n=16)
    a = augment_batch(images, Augment(), np.random.default_rng(7))
    b = augment_batch(images, Augment(), np.random.default_rng(7))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("channels", ["RGB", "BGR", "L"])
def test_split_preprocessing_equals_preprocess_image_bitwise(channels):
    recipe = Preprocess(input_size=24, resize=28, channels=channels,
                        mean=(0.5,) if channels == "L" else (0.4, 0.5, 0.6),
                        std=(0.25,) if channels == "L" else (0.2, 0.25, 0.3))
    image = Image.fromarray(_images(n=1, size=40)[0])
    assert np.array_equal(normalise_pixels(prepare_pixels(image, recipe), recipe), preprocess_image(image, recipe))


def test_train_batches_are_full_seeded_and_resumable():
    data = PixelSet(_images(n=50, size=32), np.arange(50) % 10)
    first = list(train_batches(data, CIFAR, 16, augment=Augment(), seed=0, epoch=0))
    assert len(first) == steps_per_epoch(50, 16) == 3 and first[0][0].shape == (16, 3, 32, 32)
    resumed = list(train_batches(data, CIFAR, 16, augment=Augment(), seed=0, epoch=0, start_step=2))
    assert np.array_equal(resumed[0][0], first[2][0]) and np.array_equal(resumed[0][1], first[2][1])
    other_epoch = next(train_batches(data, CIFAR, 16, augment=Augment(), seed=0, epoch=1))
    assert not np.array_equal(other_epoch[1], first[0][1])


def test_pixel_cache_round_trip_on_real_images(data_dir, tmp_path):
    from deploykit.data import Subset

    dataset = Subset(open_dataset(data_dir / "cifar10" / "test"), range(0, 10000, 500))
    decoded = load_pixels(dataset, CIFAR, cache=tmp_path)
    assert decoded.pixels.shape == (20, 32, 32, 3) and decoded.pixels.dtype == np.uint8
    assert len(list(tmp_path.glob("*.npy"))) == 2
    cached = load_pixels(dataset, CIFAR, cache=tmp_path)
    assert np.array_equal(cached.pixels, decoded.pixels) and np.array_equal(cached.labels, decoded.labels)
    image, label = dataset[3]
    assert label == decoded.labels[3]
    assert np.array_equal(normalise_pixels(decoded.pixels[3], CIFAR), preprocess_image(image, CIFAR))
