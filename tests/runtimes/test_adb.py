"""Phones over adb: the benchmark tools' command lines for a device profile and the parsing of their output.

The recorded outputs in `recorded/` were WRITTEN here from the tools' documented output format (LiteRT's
benchmark_model: `BenchmarkLoggingListener::OnBenchmarkEnd` and its per-phase stat line; ExecuTorch's
examples/portable/executor_runner.cpp: its ET_LOG Info lines); their numbers are illustrative, not a
phone's measurements. Profiling a real phone skips unless one is attached."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from deploykit.core.devices import load_device
from deploykit.core.errors import DeployKitError
from deploykit.runtimes.adb import (adb_unavailable, benchmark_command, parse_benchmark_model,
                                    parse_executor_runner, push_commands)

RECORDED = Path(__file__).parent / "recorded"


def test_litert_command_runs_benchmark_model_with_the_profiles_threads_and_xnnpack():
    device = load_device("pixel6-litert")
    command = benchmark_command(device, "m.tflite", runs=50, warmup=5)
    assert command[:3] == ["adb", "shell", "/data/local/tmp/benchmark_model"]
    assert {"--graph=/data/local/tmp/deploykit/m.tflite", "--num_threads=4", "--use_xnnpack=true",
            "--num_runs=50", "--warmup_runs=5"} <= set(command)


def test_executorch_command_runs_the_runner_warm_up_included_and_a_serial_is_passed():
    device = load_device("pixel6-executorch")
    device = dataclasses.replace(device, adb=dataclasses.replace(device.adb, serial="ABC123"))
    command = benchmark_command(device, "m.pte", runs=50, warmup=5)
    assert command[:5] == ["adb", "-s", "ABC123", "shell", "/data/local/tmp/executor_runner"]
    assert {"--model_path=/data/local/tmp/deploykit/m.pte", "--num_executions=55", "--cpu_threads=4"} <= set(command)
    assert push_commands(device.adb, "/x/m.pte", "m.pte")[1] == ["adb", "-s", "ABC123", "push", "/x/m.pte",
                                                                 "/data/local/tmp/deploykit/m.pte"]


def test_benchmark_model_output_gives_the_timed_phase_not_the_warm_up():
    timing = parse_benchmark_model((RECORDED / "benchmark_model_pixel.txt").read_text())
    assert (timing.runs, timing.p50_ms, timing.mean_ms) == (50, pytest.approx(14.880), pytest.approx(14.9913))
    assert (timing.min_ms, timing.max_ms, timing.init_ms) == pytest.approx((14.562, 16.840, 41.207))


def test_executor_runner_output_drops_the_warm_up_iterations():
    timing = parse_executor_runner((RECORDED / "executor_runner_pixel.txt").read_text(), warmup=1)
    assert timing.runs == 5 and timing.min_ms == 14.833 and timing.max_ms == 15.443
    assert timing.p50_ms == 15.099 and timing.init_ms == 47.702
    assert timing.min_ms <= timing.p90_ms <= timing.p99_ms <= timing.max_ms


@pytest.mark.parametrize("parse, text", [
    (parse_benchmark_model, "ERROR: Could not open '/data/local/tmp/deploykit/m.tflite'.\n"),
    (lambda t: parse_executor_runner(t, 1), "E executorch:executor_runner.cpp:233] Loading of method forward "
                                            "failed with status 0x20\n"),
])
def test_a_failed_run_is_one_message_quoting_the_tool(parse, text):
    with pytest.raises(DeployKitError, match="cannot read .* timings") as err:
        parse(text)
    assert text.strip()[:20] in err.value.message


def test_adb_devices_only_take_the_phone_runtimes():
    with pytest.raises(ValueError, match="adb: is for a remote phone"):
        dataclasses.replace(load_device("pixel6-litert"), location="local")


@pytest.mark.skipif(shutil.which("adb") is None, reason="no adb on this machine (no phone to profile)")
def test_profiling_a_phone_needs_one_attached():
    device = load_device("pixel6-litert")
    reason = adb_unavailable(device.adb)
    if reason:
        pytest.skip(f"no phone attached over adb: {reason}")
