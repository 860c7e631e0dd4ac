"""The one preprocessing implementation, checked against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deploykit.core.errors import DeployKitError
from deploykit.core.preprocess import Preprocess
from deploykit.data.preprocess import preprocess_image, resized_size

BLOCK_RED = (0, 64, 128, 255)  # four 2x2 blocks side by side


def block_image() -> Image.Image:
    """8 wide x 4 high; block j (columns 2j, 2j+1 in every row pair) is (R_j, 255 - R_j, 51)."""
    pixels = np.zeros((4, 8, 3), dtype=np.uint8)
    for j, red in enumerate(BLOCK_RED):
        pixels[:, 2 * j:2 * j + 2] = (red, 255 - red, 51)
    return Image.fromarray(pixels)


def test_resize_crop_normalise_by_hand():
    # Short side 4 -> 2 halves the image to 4x2 (nearest keeps block values); the centre crop of
    # width 2 starts at round((4 - 2) / 2) = 1, so blocks 1 and 2 remain.
    recipe = Preprocess(input_size=2, resize=2, interpolation="nearest", mean=(0.5, 0.5, 0.5),
                        std=(0.25, 0.25, 0.25), scale=1 / 255)
    out = preprocess_image(block_image(), recipe)
    assert out.shape == (3, 2, 2) and out.dtype == np.float32
    red = (np.array([64, 128]) / 255 - 0.5) / 0.25
    green = (np.array([191, 127]) / 255 - 0.5) / 0.25
    blue = (51 / 255 - 0.5) / 0.25
    np.testing.assert_allclose(out[0], [red, red], atol=1e-6)
    np.testing.assert_allclose(out[1], [green, green], atol=1e-6)
    np.testing.assert_allclose(out[2], np.full((2, 2), blue), atol=1e-6)


def test_bgr_reverses_the_channels():
    recipe = Preprocess(input_size=2, resize=2, interpolation="nearest", mean=(0.0,) * 3, std=(1.0,) * 3,
                        scale=1.0)
    rgb = preprocess_image(block_image(), recipe)
    bgr = preprocess_image(block_image(), Preprocess(**{**recipe.to_dict(), "channels": "BGR"}))
    np.testing.assert_array_equal(bgr, rgb[::-1])


def test_grayscale_uses_itu_601_luma():
    red = Image.new("RGB", (3, 3), (255, 0, 0))
    recipe = Preprocess(input_size=3, resize=None, channels="L", mean=(0.0,), std=(1.0,), scale=1.0)
    out = preprocess_image(red, recipe)
    assert out.shape == (1, 3, 3)
    assert np.all(out == 76)  # 0.299 * 255 = 76.2, PIL truncates


@pytest.mark.parametrize("size, resize, exact, expected", [
    ((10, 7), 5, False, (7, 5)),  # long side int(5 * 10 / 7) = 7, torchvision's truncation
    ((7, 10), 5, False, (5, 7)),
    ((10, 7), 5, True, (5, 5)),
    ((32, 32), None, False, (32, 32)),
])
def test_resized_size(size, resize, exact, expected):
    recipe = Preprocess(input_size=4, resize=resize, resize_exact=exact)
    assert resized_size(*size, recipe) == expected


def test_no_resize_crops_the_centre_and_keeps_exact_size_untouched():
    pixels = np.arange(36, dtype=np.uint8).reshape(6, 6)
    recipe = Preprocess(input_size=4, resize=None, channels="L", mean=(0.0,), std=(1.0,), scale=1.0)
    out = preprocess_image(Image.fromarray(pixels), recipe)
    np.testing.assert_array_equal(out[0], pixels[1:5, 1:5])
    same = preprocess_image(Image.fromarray(pixels), Preprocess(**{**recipe.to_dict(), "input_size": 6}))
    np.testing.assert_array_equal(same[0], pixels)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_resizing_a_constant_image_keeps_it_constant(interpolation):
    image = Image.new("RGB", (40, 30), (10, 20, 30))
    recipe = Preprocess(input_size=16, resize=20, interpolation=interpolation, mean=(0.0,) * 3,
                        std=(1.0,) * 3, scale=1.0)
    out = preprocess_image(image, recipe)
    assert out.shape == (3, 16, 16)
    np.testing.assert_allclose(out[:, 5, 5], [10, 20, 30])
    assert np.ptp(out, axis=(1, 2)).max() == 0


def test_image_smaller_than_input_is_an_error():
    with pytest.raises(DeployKitError, match="smaller than the 28x28 input"):
        preprocess_image(Image.new("L", (20, 20)), Preprocess(input_size=28, resize=None, channels="L",
                                                              mean=(0.0,), std=(1.0,)))


def test_palette_and_alpha_images_are_converted():
    image = Image.new("RGBA", (4, 4), (200, 100, 50, 0)).convert("P")
    out = preprocess_image(image, Preprocess(input_size=4, resize=None))
    assert out.shape == (3, 4, 4) and np.isfinite(out).all()


def test_a_16_bit_png_keeps_its_levels(tmp_path):
    """Pillow's convert clipped 16-bit grey to 255: a gradient became near white (issue 15, item 5)."""
    from deploykit.data.datasets import read_image

    levels = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    Image.fromarray(levels).save(tmp_path / "g16.png")
    image = read_image(tmp_path / "g16.png")
    assert image.mode.startswith("I")  # what Pillow decodes a 16-bit grey PNG to
    for channels in ("RGB", "L"):
        out = preprocess_image(image, Preprocess(input_size=8, resize=None, channels=channels, scale=1.0,
                                                 mean=(0.0,) * (1 if channels == "L" else 3),
                                                 std=(1.0,) * (1 if channels == "L" else 3)))
        expected = np.round(levels / 257.0)
        assert np.abs(out - expected).max() <= 0.5, channels  # every channel, every pixel: level / 257
        assert out.min() == 0 and out.max() == 255


def test_float_and_32_bit_images_are_refused_naming_the_file(tmp_path):
    """A float TIFF in [0, 1] went black through convert; its range cannot be known, so it is refused."""
    from deploykit.data import batches, open_dataset

    (tmp_path / "cls").mkdir()
    Image.fromarray(np.full((8, 8), 0.5, np.float32), mode="F").save(tmp_path / "cls" / "a.tif")
    with pytest.raises(DeployKitError) as err:
        next(batches(open_dataset(tmp_path), Preprocess(input_size=8, resize=None), 1))
    assert "a.tif" in err.value.message and "32-bit float pixels" in err.value.message
    assert "8- or 16-bit" in err.value.fix
    with pytest.raises(DeployKitError, match="32-bit integer pixels"):
        preprocess_image(Image.fromarray(np.full((8, 8), 300, np.int32)), Preprocess(input_size=8, resize=None))
