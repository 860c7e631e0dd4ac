"""The timing loop: blocks alternate between candidates, every timed run is counted once, and the spread
between rounds says when the machine was too busy for a p50 to be repeatable."""

from deploykit.profile import latency
from deploykit.profile.latency import measure_side_by_side, summarize


def test_blocks_alternate_and_runs_add_up(monkeypatch):
    monkeypatch.setattr(latency, "QUIESCE_S", 0.0)
    calls: list[str] = []
    candidates = {name: (lambda n=name: calls.append(n)) for name in ("a", "b")}
    rounds_seen = []
    stats = measure_side_by_side(candidates, runs=7, warmup=1, rounds=3,
                                 progress=lambda done, total: rounds_seen.append((done, total)))
    assert stats["a"].runs == stats["b"].runs == 7
    assert rounds_seen == [(1, 3), (2, 3), (3, 3)]
    timed = calls[2:]  # after one warm-up call each
    settle = latency.SETTLE
    # round 1: 2 timed runs of a (7 * 1 // 3), then of b, each block behind its untimed settling calls
    assert timed[:2 * (settle + 2)] == ["a"] * (settle + 2) + ["b"] * (settle + 2)
    assert len(timed) == 2 * (7 + 3 * settle)


def test_fewer_runs_than_rounds_still_times_every_run(monkeypatch):
    monkeypatch.setattr(latency, "QUIESCE_S", 0.0)
    stats = measure_side_by_side({"only": lambda: None}, runs=2, warmup=0, rounds=10)
    assert stats["only"].runs == 2


def test_spread_compares_the_rounds_medians():
    steady = summarize([[0.001] * 3, [0.001] * 3])
    busy = summarize([[0.001] * 3, [0.0015] * 3])
    assert steady.spread == 0.0 and abs(busy.spread - 0.5) < 1e-9
    assert summarize([[0.001]]).spread is None and abs(busy.p50_ms - 1.25) < 1e-9
    assert summarize([[0.001], [0.003]]).spread is None  # one sample a round: no median to compare
