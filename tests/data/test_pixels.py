"""The decoded-pixel cache of `deploykit finetune`: keyed by what the images are, not where they are."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from deploykit.core.preprocess import Preprocess
from deploykit.data.datasets import open_dataset
from deploykit.data.pixels import load_pixels

SIZE = 8


def _write_set(root: Path, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    files = []
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            path = root / label / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
            files.append(path)
    return files


def test_an_image_edited_in_place_is_decoded_again(tmp_path):
    """Keyed by path, the cache served the old pixels for an edited image: a fine-tune on new data gave
    bit-identical weights (issue 15, item 4)."""
    preprocess = Preprocess(input_size=SIZE, resize=None)
    files = _write_set(tmp_path / "data", seed=0)
    first = load_pixels(open_dataset(tmp_path / "data"), preprocess, cache=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("pixels-*.npy"))) == 1
    stat = files[0].stat()
    edited = np.full((SIZE, SIZE, 3), 7, dtype=np.uint8)
    Image.fromarray(edited).save(files[0])
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old times
    again = load_pixels(open_dataset(tmp_path / "data"), preprocess, cache=tmp_path / "cache")
    assert np.array_equal(again.pixels[0], edited) and not np.array_equal(first.pixels[0], edited)
    assert np.array_equal(again.pixels[1:], first.pixels[1:])
    unchanged = load_pixels(open_dataset(tmp_path / "data"), preprocess, cache=tmp_path / "cache")
    assert np.array_equal(unchanged.pixels, again.pixels)  # served from the cache: same key, same pixels
    assert len(list((tmp_path / "cache").glob("pixels-*.npy"))) == 2


def test_a_relabelled_list_gets_a_new_key(tmp_path):
    preprocess = Preprocess(input_size=SIZE, resize=None)
    files = _write_set(tmp_path / "data", seed=1)
    listing = tmp_path / "data" / "dataset.txt"
    listing.write_text("".join(f"{p.relative_to(tmp_path / 'data')}, {i % 2}\n" for i, p in enumerate(files)))
    first = load_pixels(open_dataset(tmp_path / "data"), preprocess, cache=tmp_path / "cache")
    listing.write_text("".join(f"{p.relative_to(tmp_path / 'data')}, {1 - i % 2}\n" for i, p in enumerate(files)))
    again = load_pixels(open_dataset(tmp_path / "data"), preprocess, cache=tmp_path / "cache")
    assert np.array_equal(again.labels, 1 - first.labels)
