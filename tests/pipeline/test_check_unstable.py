"""An unstable latency never passes a gate silently (issue 16, item 5): it is its own outcome, in the
verdict and in JUnit, re-measured (bounded) before it is called unstable, and timed again by the next run."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from deploykit.pipeline.check import Measurement, failed, judge, unstable
from deploykit.pipeline.junit import junit_xml
from deploykit.pipeline.recipe import load_recipe

RECIPE = """\
model: mobileone_s0
weights: random  # no real weights or data needed: the judge is under test, not a model
data: {eval: cifar10/test}
devices: [host-cpu-ort]
thresholds:
  max_latency_ms: {host-cpu-ort: 10}
stages:
  - name: folded
    passes: [reparameterize, fold_bn]
"""


def _cases(tmp_path: Path, **measured):
    (tmp_path / "cifar10" / "test").mkdir(parents=True, exist_ok=True)  # found beside the recipe: no real data needed
    (tmp_path / "r.yaml").write_text(RECIPE)
    recipe = load_recipe(tmp_path / "r.yaml")
    return judge(recipe, None, [Measurement("folded", "host-cpu-ort", **measured)])


def test_an_unstable_latency_is_neither_passed_nor_failed(tmp_path):
    (case,) = _cases(tmp_path, latency_ms=2.0, latency_unstable=True)
    assert case.status == "unstable" and "rerun on a quiet machine" in case.message
    assert unstable([case]) == [case] and failed([case]) == []
    (steady,) = _cases(tmp_path, latency_ms=2.0)
    assert steady.status == "passed"
    (slow,) = _cases(tmp_path, latency_ms=20.0, latency_unstable=True)
    assert slow.status == "unstable"  # over the limit too: still not a measurement to judge


def test_an_unstable_latency_far_from_the_limit_is_still_judged(tmp_path):
    """Limit 10 ms. The rounds' medians lie within p50 / (1 + spread) .. p50 * (1 + spread): when that whole
    band is on one side of the limit, the noise cannot flip the verdict (a 1.8 ms model measured with 40 %
    spread on a shared runner, as this machine times resnet56_cifar)."""
    (fast,) = _cases(tmp_path, latency_ms=1.8, latency_unstable=True, latency_spread=0.4)
    assert fast.status == "passed" and "disagreed by 40%; even the slowest is within the limit" in fast.message
    (slow,) = _cases(tmp_path, latency_ms=30.0, latency_unstable=True, latency_spread=0.4)
    assert slow.status == "failed" and "even the fastest is over the limit" in slow.message
    for near in (8.0, 12.0):  # 8 * 1.4 > 10 and 12 / 1.4 < 10: the band straddles the limit
        (case,) = _cases(tmp_path, latency_ms=near, latency_unstable=True, latency_spread=0.4)
        assert case.status == "unstable" and "too near the limit" in case.message, near


def test_junit_reports_unstable_as_an_error_not_a_failure(tmp_path):
    suite = ET.fromstring(junit_xml("s", _cases(tmp_path, latency_ms=2.0, latency_unstable=True))).find("testsuite")
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("0", "1", "0")
    error = suite.find("testcase").find("error")
    assert error is not None and error.get("type") == "unstable"


def test_an_unstable_measurement_is_measured_again_before_it_is_called_unstable(monkeypatch):
    """The bounded re-measure in profile: two attempts, the steadier kept."""
    from deploykit.pipeline import profile_measure as profile
    from deploykit.profile.latency import LatencyStats

    attempts = []

    class Runner:
        def latency(self, calls, *, runs, warmup, progress):
            attempts.append(len(attempts))
            return {name: LatencyStats(2.0, 2, 2, 2, runs, spread=0.5 - 0.2 * len(attempts)) for name in calls}

    class Row:
        def __init__(self):
            self.name, self.runtime, self.latency, self.notes = "a", "onnxruntime", [], []

    class Candidate:
        row, runner, runnable, group, static_batch, preprocess = Row(), Runner(), None, "g", None, None

    monkeypatch.setattr(profile, "random_inputs", lambda preprocess, batch: None)
    candidate = Candidate()
    profile.measure_latency([candidate], [1], runs=30, warmup=1, progress=lambda *a: None)
    assert len(attempts) == profile.LATENCY_ATTEMPTS == 2
    assert abs(candidate.row.latency[0].spread - 0.1) < 1e-9  # the steadier attempt is kept
    assert profile.latency_is_unstable(0.3) and not profile.latency_is_unstable(0.1)


def test_the_cache_reads_back_the_unstable_flag_it_stores(tmp_path):
    from deploykit.pipeline.cache import PipelineCache

    cache = PipelineCache(tmp_path)
    record = Measurement("folded", "host-cpu-ort", latency_ms=2.0, latency_unstable=False).to_dict()
    cache.store_measurement("k" * 64, {"measurement": record})
    assert cache.measurement("k" * 64) == {"measurement": record}  # a bool field is not "damaged"
