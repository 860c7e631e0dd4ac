"""Sweep specs, trials and plans (no Ray): the shipped specs load, axes expand as documented, mistakes
stop at their line, invalid combinations become rows that say why, and the Pareto front is the front."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploykit.core.config import ConfigError
from deploykit.core.errors import DeployKitError
from deploykit.core.paths import project_root
from deploykit.pipeline.cache import PipelineCache
from deploykit.pipeline.sweep_plan import make_sweep_plan
from deploykit.pipeline.sweep_results import OK, SweepRow, _anchor_latency, fronts, mark_fronts
from deploykit.pipeline.sweep_spec import expand, load_sweep, trial_recipe
from tests.pipeline.sweep_helpers import write_spec

SWEEPS = project_root() / "recipes" / "sweeps"


def test_shipped_sweeps_expand_to_the_documented_trials(data_dir):
    resnet = load_sweep(SWEEPS / "resnet_cifar.yaml")
    trials = expand(resnet)
    assert len(trials) == 16
    assert trials[0].name == "resnet20_cifar-prune0-fp32" and trials[-1].name == "resnet56_cifar-prune0_25-int8"
    assert {t.model for t in trials} == {f"resnet{d}_cifar" for d in (20, 32, 44, 56)}
    effnet = load_sweep(SWEEPS / "efficientnet_lite0_resolution.yaml")
    assert [t.name for t in expand(effnet)][:2] == ["efficientnet_lite0-in160-fp32", "efficientnet_lite0-in160-int8"]
    assert effnet.data.exclude_calib and effnet.int8["calib_split"] == 300


def test_int8_trials_are_laid_out_for_the_device_and_not_timed_by_the_build(data_dir):
    spec = load_sweep(SWEEPS / "resnet_cifar.yaml")
    int8 = next(t for t in expand(spec) if t.precision == "int8")
    options = trial_recipe(spec, int8, "host-cpu-openvino").stages[0].options
    assert options["int8"] is True and options["device"] == "host-cpu-openvino"
    assert options["time_on_device"] is False and options["calib_size"] == 384
    fp32 = next(t for t in expand(spec) if t.precision == "fp32" and t.prune == 0)
    stage = trial_recipe(spec, fp32, None).stages[0]
    assert stage.options == {} and [p.name for p in stage.passes] == ["reparameterize", "fold_bn"]
    pruned = next(t for t in expand(spec) if t.prune == 0.25)
    assert trial_recipe(spec, pruned, None).stages[0].passes[0].config.ratio == 0.25


@pytest.mark.parametrize("axes, message", [
    ("precision: [fp32, bf8]", "'bf8' is not one of"),
    ("prune: [0, 1.5]", "ratios of channels removed"),
    ("colour: [red]", "unknown key 'colour'"),
    ("model: [resnet20_cifar, no_such_net]", "no_such_net"),
    ("precision: [fp32]\n  exclude: [{size: 3}]", "keys are axes"),
    ("precision: [fp32, fp32]", "distinct values"),
])
def test_spec_mistakes_stop_at_their_line(tmp_path, data_dir, axes, message):
    spec = write_spec(tmp_path, axes)
    with pytest.raises(ConfigError, match=message) as info:
        load_sweep(spec)
    assert "small.yaml:" in info.value.message


def test_exclude_calib_needs_a_calibration_split(tmp_path, data_dir):
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("calib: ", "exclude_calib: true, calib: "))
    with pytest.raises(ConfigError, match="set int8.calib_split"):
        load_sweep(spec)


def test_excluded_combinations_are_not_trials(tmp_path, data_dir):
    spec = write_spec(tmp_path, "prune: [0, 0.25]\n  precision: [fp32, int8]\n  exclude: [{prune: 0.25, precision: int8}]")
    names = [t.name for t in expand(load_sweep(spec))]
    assert names == ["resnet20_cifar-prune0-fp32", "resnet20_cifar-prune0-int8", "resnet20_cifar-prune0_25-fp32"]


def test_invalid_combinations_and_unrunnable_devices_become_rows_saying_why(tmp_path, data_dir):
    spec = write_spec(tmp_path, "target: [onnx, coreml]\n  precision: [fp32, int8]")
    spec.write_text(spec.read_text().replace("host-cpu-openvino", "mac-m1-coreml"))
    plan = make_sweep_plan(load_sweep(spec), spec, PipelineCache(tmp_path / "cache"))
    cells = {(c.trial, c.device): c for c in plan.cells}
    invalid = cells[("resnet20_cifar-int8-coreml", "host-cpu-ort")].skip
    assert invalid.startswith("invalid combination: target coreml takes no option")
    assert "does not run onnx artifacts" in cells[("resnet20_cifar-fp32-onnx", "mac-m1-coreml")].skip
    assert cells[("resnet20_cifar-fp32-coreml", "mac-m1-coreml")].skip is None
    assert cells[("resnet20_cifar-int8-onnx", "host-cpu-ort")].build == "resnet20_cifar-int8-onnx@onnxruntime"
    assert plan.anchors == {"host-cpu-ort": "resnet20_cifar-fp32-onnx", "mac-m1-coreml": "resnet20_cifar-fp32-coreml"}
    assert plan.counts()["builds_reused"] == 0 and len(plan.builds) == 3


def test_bad_prune_options_are_one_clear_error(tmp_path, data_dir):
    spec = write_spec(tmp_path, "prune: [0, 0.3]")
    spec.write_text(spec.read_text() + "prune: {importance: nonsense}\n")
    loaded = load_sweep(spec)
    with pytest.raises(DeployKitError, match="unknown importance 'nonsense'"):
        trial_recipe(loaded, expand(loaded)[1], None)


def _row(trial: str, top1: float, p50: float, vs_anchor: float, anchor: float) -> SweepRow:
    return SweepRow(trial, "dev", "m", None, 0.0, "fp32", "onnx", OK, top1=top1, p50_ms=p50,
                    vs_anchor=vs_anchor, anchor_p50_ms=anchor)


def test_front_is_drawn_on_anchored_latency_and_excludes_failed_rows():
    rows = [_row("a", 0.80, 9.0, 1.0, 9.0),  # a noisy moment: raw 9 ms, but as fast as its anchor
            _row("b", 0.82, 2.0, 2.0, 1.0),  # raw 2 ms, twice its anchor
            _row("c", 0.79, 1.0, 0.5, 2.0),
            _row("d", 0.90, 0.5, 0.1, 5.0)]
    rows[3].status = "failed"  # the best point, but it failed: no candidate
    _anchor_latency(rows)
    median_anchor = 3.5  # of 9, 1, 2, 5
    assert [r.latency_ms for r in rows] == pytest.approx([3.5, 7.0, 1.75, 0.35])
    assert rows[0].latency_ms == pytest.approx(median_anchor)
    mark_fronts(rows)
    assert [r.trial for r in fronts(rows)["dev"]] == ["c", "a", "b"]
    rows[1].top1 = 0.80  # now b is slower than a and no more accurate: dominated
    mark_fronts(rows)
    assert [r.trial for r in fronts(rows)["dev"]] == ["c", "a"]


def test_sweep_modules_stay_small():
    for path in (Path(project_root()) / "deploykit").rglob("sweep*.py"):
        assert len(path.read_text().splitlines()) <= 300, path


def test_without_ray_the_error_names_the_extra(monkeypatch):
    import sys

    from deploykit.pipeline.sweep_ray import start

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # start() sets it: restored afterwards
    with pytest.raises(DeployKitError, match="ray is not installed") as info:
        start({}, workers=1)
    assert info.value.fix == 'pip install "deploykit[sweep]"'


def test_workers_and_address_exclude_each_other():
    from deploykit.pipeline.sweep_ray import start

    with pytest.raises(DeployKitError, match="--workers caps the CPUs of the in-process Ray"):
        start({}, address="auto", workers=2)
    with pytest.raises(DeployKitError, match="at least one"):
        start({}, workers=0)
