"""`deploykit sweep` on a real in-process Ray: a small sweep runs end to end (rows, fronts, files, the
HTML report with the front marked), Ray listens on loopback only, a rerun reuses everything, a worker
killed mid-trial is retried, and a driver killed mid-sweep loses none of the finished work."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from deploykit.core.manifest import Manifest, manifest_path
from tests.pipeline.sweep_helpers import (end_session, environment, listening, non_loopback, results,
                                          session_processes, start, sweep_command, wait_for, write_spec)

pytest.importorskip("ray", reason='Ray is the sweep extra: pip install "deploykit[sweep]"')
TIMEOUT = 600


def run_to_end(proc, log, timeout: float = TIMEOUT) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        end_session(proc.pid)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The small sweep run once with 2 workers, Ray's listening sockets sampled while it ran."""
    from tests.conftest import DATA_DIR

    if not DATA_DIR.is_dir():
        pytest.skip(f"real data not found at {DATA_DIR}")
    folder = tmp_path_factory.mktemp("sweep")
    spec = write_spec(folder)
    env, log = environment(folder / "home"), folder / "run.log"
    proc = start(sweep_command(spec, folder / "cache", folder / "out", "--workers", "2"), env, log)
    sockets = []
    while proc.poll() is None:
        sockets += listening(set(session_processes(proc.pid)))
        time.sleep(0.5)
    return folder, spec, env, run_to_end(proc, log), sockets


def test_small_sweep_gives_a_row_per_trial_and_device_and_a_front_per_device(swept):
    folder, _, _, text, _ = swept
    doc = results(folder / "out")
    rows = doc["rows"]
    assert [(r["trial"], r["device"]) for r in rows] == [
        ("resnet20_cifar-fp32", "host-cpu-ort"), ("resnet20_cifar-fp32", "host-cpu-openvino"),
        ("resnet20_cifar-int8", "host-cpu-ort"), ("resnet20_cifar-int8", "host-cpu-openvino")]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["n"] == 80 and 0.5 < row["top1"] <= 1.0  # resnet20 scores ~80 % on CIFAR-10, not chance
        assert row["p50_ms"] > 0 and row["latency_ms"] > 0 and row["vs_anchor"] > 0
        assert len(row["build_node"]) == 56 and row["eval_node"] and row["latency_node"]
    fp32 = [r for r in rows if r["precision"] == "fp32"]
    assert all(r["agreement"] == 1.0 and r["top1_drop"] == 0.0 for r in fp32)  # the same math as the float model
    int8 = {r["device"]: r for r in rows if r["precision"] == "int8"}
    assert int8["host-cpu-ort"]["layout_runtime"] == "onnxruntime"
    assert int8["host-cpu-openvino"]["layout_runtime"] == "openvino"
    assert int8["host-cpu-ort"]["artifact_sha256"] != int8["host-cpu-openvino"]["artifact_sha256"]
    for row in int8.values():  # laid out for the device, timed by its measuring actor rather than the build
        record = Manifest.read(manifest_path(Path(row["artifact"]))).extra["int8"]
        assert record["made_for"]["device"] == row["device"]
        assert record["speed"] == {"measured": False, "reason": "time_on_device: false (the caller times it, "
                                                                 "as a sweep does)"}
    for device, front in doc["fronts"].items():
        assert front, f"no front on {device}"
        assert {r["trial"] for r in rows if r["device"] == device and r["pareto"]} == set(front)
    assert "Pareto front host-cpu-ort" in text and "retried after a lost worker: nothing" in text


def test_outputs_are_written_and_the_html_marks_the_front(swept):
    folder = swept[0]
    out = folder / "out"
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("trial,device,model")
    markdown = (out / "results.md").read_text()
    assert "Pareto fronts" in markdown and markdown.count("★") >= 2
    html = (out / "report.html").read_text()
    front = results(out)["fronts"]["host-cpu-ort"]
    assert 'class="artifact frontier"' in html and f"★ {front[0]}" in html
    assert "circle class=\"point frontier\"" in html


def test_in_process_ray_listens_on_loopback_only(swept):
    sockets = swept[4]
    assert sockets, "no listening socket of the sweep's processes was seen: the sampling saw nothing"
    assert not non_loopback(sockets), non_loopback(sockets)


def test_a_rerun_plans_everything_reused_and_recomputes_nothing(swept):
    folder, spec, env, _, _ = swept
    log = folder / "rerun.log"
    text = run_to_end(start(sweep_command(spec, folder / "cache", folder / "out2", "--workers", "2"), env, log), log)
    assert "reused from the cache: 3/3 builds, 1/1 float references, 4/4 evaluations, 4/4 latency" in text
    doc = results(folder / "out2")
    assert doc["summary"]["ran"] == 0
    assert all(r["reused"] == "build,evaluation,latency" for r in doc["rows"])
    first = {(r["trial"], r["device"]): (r["top1"], r["p50_ms"]) for r in results(folder / "out")["rows"]}
    assert first == {(r["trial"], r["device"]): (r["top1"], r["p50_ms"]) for r in doc["rows"]}


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_retried_and_the_sweep_completes(tmp_path, data_dir):
    spec = write_spec(tmp_path, "prune: [0, 0.25]\n  precision: [int8]")
    log = tmp_path / "run.log"
    proc = start(sweep_command(spec, tmp_path / "cache", tmp_path / "out", "--workers", "1"), environment(tmp_path / "home"), log)
    victims: list[int] = []

    def busy_worker() -> bool:  # a worker process running a build (Ray titles it "ray::LABEL")
        busy = [pid for pid, cmd in session_processes(proc.pid).items() if cmd.startswith("ray::resnet20_cifar")]
        victims.extend(busy[:1])
        return bool(busy)

    try:
        assert wait_for(busy_worker, 300), log.read_text()[-2000:]
        assert session_processes(proc.pid).get(victims[0], "").startswith("ray::resnet20_cifar")  # still building
        os.kill(victims[0], signal.SIGKILL)
    except BaseException:
        end_session(proc.pid)
        raise
    run_to_end(proc, log)
    doc = results(tmp_path / "out")
    retried = doc["summary"]["retried"]
    assert retried, "the killed task was not retried"
    label, starts = next(iter(retried.items()))
    assert label.startswith("resnet20_cifar") and max(s["attempt"] for s in starts) == 1, retried
    assert victims[0] not in {s["pid"] for s in starts if s["attempt"] == 1}  # the retry ran elsewhere
    assert "retried after a lost worker: resnet20_cifar" in log.read_text()
    assert all(r["status"] == "ok" for r in doc["rows"]), [r["reason"] for r in doc["rows"]]
    assert sum(r["attempts"] for r in doc["rows"]) >= 1


@pytest.mark.slow
def test_a_killed_driver_loses_no_finished_trial(tmp_path, data_dir):
    spec = write_spec(tmp_path, "prune: [0, 0.25]\n  precision: [fp32, int8]")
    env, log = environment(tmp_path / "home"), tmp_path / "run.log"
    proc = start(sweep_command(spec, tmp_path / "cache", tmp_path / "out", "--workers", "2"), env, log)
    try:
        assert wait_for(lambda: log.read_text().count("✓ ") >= 2 or proc.poll() is not None, TIMEOUT)
    finally:
        end_session(proc.pid)  # the driver and every Ray process it started
    assert proc.wait(timeout=30) != 0, "the sweep finished before it could be killed"
    done = [line.split("✓ ")[1].split(":")[0] for line in log.read_text().splitlines() if "✓ " in line]
    assert done
    plan = _run(spec, tmp_path, env, "--dry-run")
    for finished in done:  # "resnet20_cifar-prune0-fp32 on host-cpu-ort"
        assert f"    {finished}: reused, reused" in plan, (finished, plan)
    log2 = tmp_path / "rerun.log"
    run_to_end(start(sweep_command(spec, tmp_path / "cache", tmp_path / "out", "--workers", "2"), env, log2), log2)
    rows = {f"{r['trial']} on {r['device']}": r for r in results(tmp_path / "out")["rows"]}
    for finished in done:
        assert rows[finished]["reused"] == "build,evaluation,latency", rows[finished]
    assert all(r["status"] == "ok" for r in rows.values())


def _run(spec, folder, env, *extra) -> str:
    log = folder / "plan.log"
    return run_to_end(start(sweep_command(spec, folder / "cache", folder / "out", *extra), env, log), log)
