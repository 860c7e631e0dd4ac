"""Wall-clock latency, measured so that comparisons survive a noisy shared machine:
candidates alternate in blocks round by round, and ratios are taken from medians of the same run."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

ROUNDS = 10  # blocks per candidate: enough alternation to share out load spikes, few switches
SETTLE = 2  # untimed calls at the start of every block
MIN_ROUND_SAMPLES = 2  # a round of one sample has no median, only a noisy sample: no stability verdict
QUIESCE_S = 0.05  # idle gap before a block: the previous runtime's spinning threads go to sleep


@dataclass(frozen=True)
class LatencyStats:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    runs: int
    spread: float | None = None  # slowest round's median / fastest round's - 1: how stable the machine was

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(rounds: list[list[float]]) -> LatencyStats:
    """Quantiles of every sample (seconds), and the spread between the rounds' medians."""
    ms = sorted(s * 1e3 for block in rounds for s in block)
    medians = [statistics.median(r) for r in rounds if r]
    judged = len(medians) > 1 and min(map(len, rounds)) >= MIN_ROUND_SAMPLES
    spread = max(medians) / min(medians) - 1 if judged else None
    return LatencyStats(_quantile(ms, 0.5), _quantile(ms, 0.9), _quantile(ms, 0.99), statistics.fmean(ms), len(ms),
                        spread)


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
                         warmup: int = 5, progress: Callable[[int, int], None] | None = None,
                         rounds: int = ROUNDS) -> dict[str, LatencyStats]:
    """Latency of each candidate, timed in blocks that alternate between candidates round by round.

    Blocks, not single calls: each runtime keeps its production threading (ONNX Runtime's spinning pool,
    torch's OpenMP team), and one runtime's still-spinning threads cannot steal the cores of the next
    call (measured here: alternating single calls made ORT's p50 swing by 20 % between two runs and
    forced its pool to sleep, doubling its latency). Alternating the blocks still spreads a load spike
    over every candidate. The first SETTLE calls of each block are untimed: the pool wakes up.
    `progress(rounds done, rounds in total)` is called after every round."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    rounds = max(1, min(rounds, runs))
    samples: dict[str, list[list[float]]] = {name: [] for name in candidates}
    for done in range(rounds):
        quota = runs * (done + 1) // rounds - runs * done // rounds  # sums to `runs` exactly
        for name, fn in candidates.items():
            time.sleep(QUIESCE_S)
            for _ in range(SETTLE):
                fn()
            samples[name].append([time_once(fn) for _ in range(quota)])
        if progress is not None:
            progress(done + 1, rounds)
    return {name: summarize(blocks) for name, blocks in samples.items()}
