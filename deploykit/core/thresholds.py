"""What an artifact must meet against the float training form: shared by recipes (per stage, merged down
the stage list) and sweeps (one set for every trial)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Thresholds:
    """What every artifact must meet against the float training form. Accuracy in fractions."""

    max_top1_drop: float | None = None  # float top-1 minus the stage's top-1
    min_agreement: float | None = None  # share of images whose top-1 class equals the float model's
    min_sqnr_db: float | None = None  # signal-to-quantization-noise of the logits against the float's
    max_latency_ms: dict[str, float] = field(default_factory=dict)  # device -> p50 ms at the first batch

    def __post_init__(self) -> None:
        for name in ("max_top1_drop", "min_agreement"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a fraction between 0 and 1 (0.01 = one point), got {value}")
        if any(v <= 0 for v in self.max_latency_ms.values()):
            raise ValueError("max_latency_ms values must be positive")

    def merged(self, override: "Thresholds | None") -> "Thresholds":
        """These thresholds with `override`'s set values on top (latency merged per device)."""
        if override is None:
            return self
        values = {}
        for f in dataclasses.fields(self):
            if f.name != "max_latency_ms":
                mine, theirs = getattr(self, f.name), getattr(override, f.name)
                values[f.name] = mine if theirs is None else theirs
        return Thresholds(**values, max_latency_ms={**self.max_latency_ms, **override.max_latency_ms})

    def checks(self) -> dict[str, float]:
        """The set accuracy thresholds by name (latency is per device, see `max_latency_ms`)."""
        return {name: value for name in ("max_top1_drop", "min_agreement", "min_sqnr_db")
                if (value := getattr(self, name)) is not None}
