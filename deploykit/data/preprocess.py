"""Pixels -> model input: THE one implementation of a `Preprocess`, used for the float model and for
every artifact, so an accuracy gap between them can never come from two copies of the resize code."""

from __future__ import annotations

import numpy as np
from PIL import Image

from deploykit.core.errors import DeployKitError
from deploykit.core.preprocess import Preprocess

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def preprocess_image(image: Image.Image, preprocess: Preprocess) -> np.ndarray:
    """Convert, resize, centre-crop, scale and normalise one image: float32 CHW."""
    return _normalise(_to_chw(_geometry(image, preprocess), preprocess.channels), preprocess)


def prepare_pixels(image: Image.Image, preprocess: Preprocess) -> np.ndarray:
    """The geometric half of `preprocess_image` (convert, resize, centre-crop): uint8 HWC (HW1 for "L").

    For pipelines that keep decoded pixels (a training cache) and augment them before `normalise_pixels`;
    the two halves give bit for bit what `preprocess_image` gives."""
    pixels = np.asarray(_geometry(image, preprocess), dtype=np.uint8)
    return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels


def normalise_pixels(pixels: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """uint8 (..., H, W, C) from `prepare_pixels` -> float32 (..., C, H, W), channel order, scale, normalise."""
    chw = np.moveaxis(pixels.astype(np.float32), -1, -3)
    if preprocess.channels == "BGR":
        chw = chw[..., ::-1, :, :]
    return _normalise(chw, preprocess)


def _geometry(image: Image.Image, preprocess: Preprocess) -> Image.Image:
    image = to_8bit(image).convert("L" if preprocess.channels == "L" else "RGB")
    image = _resize(image, preprocess)
    return _centre_crop(image, preprocess.input_size)


def to_8bit(image: Image.Image) -> Image.Image:
    """8-bit pixels for any image mode Pillow's `convert` would get wrong: it clips a 16-bit image to 255
    (near white) and a float one to 0..255 (black for [0, 1] data). 16-bit grey (modes I;16*, and mode I from
    a PNG, whose depth is 16 at most) is scaled 65535 -> 255; a float or 32-bit integer image has no range
    of its own, so it is refused rather than guessed."""
    if image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG"):
        wide = np.asarray(image).astype(np.int64)
        return Image.fromarray(((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8), "L")
    if image.mode in ("I", "F"):
        kind = "32-bit float" if image.mode == "F" else "32-bit integer"
        raise DeployKitError(f"{kind} pixels (image mode {image.mode}) have no standard range to map to 0..255",
                             fix="convert the images to 8- or 16-bit PNG or JPEG, scaled as the model expects")
    return image


def resized_size(width: int, height: int, preprocess: Preprocess) -> tuple[int, int]:
    """(width, height) after the resize step; the short side follows torchvision's rounding
    (long side truncated), so published recipes written with torchvision give the same pixels."""
    target = preprocess.resize
    if target is None:
        return width, height
    if preprocess.resize_exact:
        return target, target
    if width <= height:
        return target, int(target * height / width)
    return int(target * width / height), target


def _resize(image: Image.Image, preprocess: Preprocess) -> Image.Image:
    size = resized_size(*image.size, preprocess)
    if size == image.size:
        return image
    return image.resize(size, resample=_RESAMPLE[preprocess.interpolation])


def _centre_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    if width < size or height < size:
        # Padding (torchvision's choice) would silently feed black borders; an error shows the mismatch.
        raise DeployKitError(f"image is {width}x{height}, smaller than the {size}x{size} input",
                             fix="set a resize (--resize) or a smaller --size")
    left = int(round((width - size) / 2.0))  # torchvision's CenterCrop offsets
    top = int(round((height - size) / 2.0))
    if (left, top, size, size) == (0, 0, width, height):
        return image
    return image.crop((left, top, left + size, top + size))


def _to_chw(image: Image.Image, channels: str) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float32)
    if channels == "L":
        return pixels[np.newaxis]
    chw = pixels.transpose(2, 0, 1)
    return chw[::-1] if channels == "BGR" else chw


def _normalise(chw: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    mean = np.asarray(preprocess.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(preprocess.std, dtype=np.float32).reshape(-1, 1, 1)
    scaled = chw * np.float32(preprocess.scale)
    return np.ascontiguousarray((scaled - mean) / std, dtype=np.float32)
