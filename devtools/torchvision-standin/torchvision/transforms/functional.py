"""Stand-in: torchvision's InterpolationMode enum; every function raises when called."""

from enum import Enum

from torchvision._unavailable import missing


class InterpolationMode(Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return missing("torchvision.transforms.functional", name)
