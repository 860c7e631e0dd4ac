"""How pixels become a model input. Part of every zoo entry and every manifest, so the float model
and each artifact are fed through exactly the same code."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """resize (short side, or exact when `resize_exact`), centre crop, scale to [0,1], normalise."""

    input_size: int = 224
    resize: int | None = 256
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: Literal["RGB", "BGR", "L"] = "RGB"
    scale: float = 1.0 / 255.0
    resize_exact: bool = False
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        n = 1 if self.channels == "L" else 3
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError(f"mean/std need {n} values for {self.channels} input")
        if self.input_size <= 0:
            raise ValueError("input_size must be positive")

    @property
    def num_channels(self) -> int:
        return 1 if self.channels == "L" else 3

    def with_size(self, size: int) -> "Preprocess":
        """The same recipe at another resolution, keeping the resize/crop ratio."""
        resize = None if self.resize is None else round(size * self.resize / self.input_size)
        return Preprocess(**{**self.to_dict(), "input_size": size, "resize": resize})

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)
