"""Wall-clock latency, measured so that comparisons survive a noisy shared machine:
candidates are interleaved round by round, and ratios are taken from medians of the same run."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable


@dataclass(frozen=True)
class LatencyStats:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    runs: int

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(samples_s: list[float]) -> LatencyStats:
    ms = sorted(s * 1e3 for s in samples_s)
    return LatencyStats(_quantile(ms, 0.5), _quantile(ms, 0.9), _quantile(ms, 0.99), statistics.fmean(ms), len(ms))


def _quantile(sorted_ms: list[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted samples."""
    pos = q * (len(sorted_ms) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_ms) - 1)
    return sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (pos - lo)


def time_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_side_by_side(candidates: dict[str, Callable[[], object]], *, runs: int = 50,
                         warmup: int = 5, progress: Callable[[int, int], None] | None = None
                         ) -> dict[str, LatencyStats]:
    """Latency of each candidate, interleaved so load spikes hit all of them alike.
    `progress(rounds done, rounds in total)` is called after every round."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for done in range(1, runs + 1):
        for name, fn in candidates.items():
            samples[name].append(time_once(fn))
        if progress is not None:
            progress(done, runs)
    return {name: summarize(s) for name, s in samples.items()}
