"""Training-only augmentation: random crop from a zero-padded image, and horizontal flip.

The standard CIFAR recipe (He et al. 2015, section 4.2: "4 pixels are padded on each side, and a 32x32 crop
is randomly sampled from the padded image or its horizontal flip"). It works on the uint8 pixels of
`prepare_pixels`, before `normalise_pixels`, so the padding is black as in torchvision's
`RandomCrop(32, padding=4)`, and evaluation never sees it: accuracy and parity always go through
`preprocess_image` alone.

Randomness comes from the generator the caller passes, so a batch is a pure function of its seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Augment:
    """`pad` pixels of zeros on each side before a random crop of the original size; `hflip` with p=0.5.
    `Augment(pad=0, hflip=False)` is the identity."""

    pad: int = 4
    hflip: bool = True

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ValueError(f"pad must be >= 0, got {self.pad}")

    def to_dict(self) -> dict:
        return asdict(self)


NO_AUGMENT = Augment(pad=0, hflip=False)


def augment_batch(pixels: np.ndarray, augment: Augment, rng: np.random.Generator) -> np.ndarray:
    """A randomly cropped / flipped copy of uint8 images (N, H, W, C); the input is not modified."""
    n, height, width, _ = pixels.shape
    out = pixels.copy()
    if augment.pad:
        p = augment.pad
        padded = np.pad(pixels, ((0, 0), (p, p), (p, p), (0, 0)))
        tops = rng.integers(0, 2 * p + 1, size=n)
        lefts = rng.integers(0, 2 * p + 1, size=n)
        for i in range(n):
            out[i] = padded[i, tops[i]:tops[i] + height, lefts[i]:lefts[i] + width]
    if augment.hflip:
        flip = rng.random(n) < 0.5
        out[flip] = out[flip, :, ::-1]
    return out
