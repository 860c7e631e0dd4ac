"""`profile_artifacts` on small real exports: the float original is rebuilt from the manifest and is the
reference, static batches are n/a rather than re-exported, costs come from the graph, precision is what the
runtime reports. Latency is checked for structure only, never for speed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from deploykit import zoo
from deploykit.core.devices import load_device
from deploykit.core.manifest import Manifest, manifest_path
from deploykit.pipeline.export import ExportRequest, export
from deploykit.pipeline.profile import profile_artifacts, unique_names
from deploykit.pipeline.zoo_cost import deploy_cost
from deploykit.profile.graph_cost import onnx_cost
from deploykit.profile.results import ARTIFACT, FLOAT_ORIGINAL, ProfileReport

MODEL = "resnet20_cifar"  # 41 MMACs at 32x32: quick to export and run
FAST = dict(runs=3, warmup=1)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """A weights file and two exports of it: static batch 1 and static batch 2, in different folders."""
    root = tmp_path_factory.mktemp("profile")
    torch.manual_seed(0)
    weights = root / "weights" / "r20.pt"
    weights.parent.mkdir()
    torch.save(zoo.create(MODEL).state_dict(), weights)
    out = {"weights": weights}
    for name, batch in (("b1", 1), ("b2", 2)):
        out[name] = export(ExportRequest(model=MODEL, weights=weights, out_dir=root / name, batch=batch)).artifact
    return out


@pytest.fixture(scope="module")
def report(exports) -> ProfileReport:
    return profile_artifacts([exports["b1"], exports["b2"]], load_device("host-cpu-ort"), batches=[1, 2], **FAST)


def test_the_float_original_is_a_row_and_the_reference(report, exports):
    float_row, b1, b2 = report.rows
    assert (float_row.role, float_row.runtime, float_row.name) == (FLOAT_ORIGINAL, "torch", f"{MODEL} (float)")
    assert b1.role == b2.role == ARTIFACT and b1.reference == b2.reference == float_row.name
    assert float_row.file_size_bytes == exports["weights"].stat().st_size
    assert any("training-form PyTorch model with r20.pt" in note for note in float_row.notes)


def test_outputs_are_compared_with_the_float_original(report):
    float_row, b1, b2 = report.rows
    assert float_row.quality.agreement is None and float_row.quality.top1 is None  # no labels without --data
    for row in (b1, b2):
        q = row.quality
        assert q.n == 64 and "random probe" in q.inputs
        assert q.agreement == 1.0 and q.cosine > 0.999999 and q.sqnr_db > 80 and q.max_rel_err < 1e-4


def test_static_batches_are_na_not_re_exported(report):
    float_row, b1, b2 = report.rows
    assert [lat.batch for lat in float_row.latency] == [1, 2]
    assert all(lat.p50_ms > 0 and lat.runs == 3 for lat in float_row.latency)
    assert b1.latency_at(1).p50_ms is not None and b1.latency_at(2).note == "n/a (static batch 1)"
    assert b2.latency_at(2).p50_ms is not None and b2.latency_at(1).note == "n/a (static batch 2)"
    lat = b2.latency_at(2)
    assert lat.p50_ms <= lat.p90_ms <= lat.p99_ms and lat.throughput == pytest.approx(2e3 / lat.p50_ms)


def test_costs_come_from_the_graph_and_agree_with_the_deploy_form(report):
    float_row, b1, b2 = report.rows
    deployed = deploy_cost(MODEL)
    for row in (b1, b2):  # per image, whatever the static batch
        assert (row.cost.params, row.cost.macs, row.cost.memory_access) == \
            (deployed.params, deployed.macs, deployed.memory_access)
        assert row.cost.source == "ONNX graph"
    assert float_row.cost.macs == deployed.macs and float_row.cost.params > deployed.params  # BN still there


def test_load_warmup_precision_size_energy_and_environment(report):
    for row in report.rows:
        assert row.load_ms > 0 and row.warmup_ms > 0 and row.file_size_bytes > 0
        assert row.precision_used == "fp32"
        assert row.energy.joules_per_image is not None or row.energy.source  # a reading, or why not
    env = report.environment
    assert env["cpu"] and env["usable_cores"] >= 1 and env["threads"] == 2
    assert "onnxruntime" in env["versions"] and "torch" in env["versions"]
    assert report.devices["host-cpu-ort"]["runtime"] == "onnxruntime"
    assert json.loads(json.dumps(report.to_dict()))["rows"][0]["name"] == f"{MODEL} (float)"


def test_names_are_told_apart_by_folder(exports):
    assert unique_names([exports["b1"], exports["b2"]]) == [f"b1/{MODEL}.onnx", f"b2/{MODEL}.onnx"]


def _copy_artifact(src: Path, dst_dir: Path, edit=None) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    manifest = Manifest.read(manifest_path(src))
    if edit is not None:
        edit(manifest)
    manifest.write(manifest_path(dst))
    return dst


def test_old_manifest_finds_the_weights_beside_the_artifact(exports, tmp_path):
    def old(manifest):  # before `parent.weights` was recorded
        manifest.parent.pop("weights")
    artifact = _copy_artifact(exports["b1"], tmp_path / "old", old)
    shutil.copy(exports["weights"], artifact.parent / "r20.pt")
    rows = profile_artifacts([artifact], load_device("host-cpu-ort"), batches=[1], **FAST).rows
    assert [r.role for r in rows] == [FLOAT_ORIGINAL, ARTIFACT] and rows[1].quality.agreement == 1.0


def test_missing_or_changed_weights_leave_a_note_not_a_wrong_reference(exports, tmp_path):
    changed = tmp_path / "changed.pt"  # the recorded path now holds other weights: the sha256 says so
    torch.save({"x": torch.zeros(1)}, changed)

    def moved(manifest):
        manifest.parent["weights"] = str(changed)
    artifact = _copy_artifact(exports["b1"], tmp_path / "moved", moved)
    rows = profile_artifacts([artifact], load_device("host-cpu-ort"), batches=[1], **FAST).rows
    assert [r.role for r in rows] == [ARTIFACT] and rows[0].reference is None
    assert rows[0].quality.agreement is None
    assert any("no float original: no weights file with the manifest's sha256" in n for n in rows[0].notes)


def test_random_init_export_says_there_is_no_float_original(exports, tmp_path):
    def random_init(manifest):
        manifest.weights_sha256 = manifest.parent["weights_sha256"] = "random-init"
        manifest.parent["weights"] = None
    artifact = _copy_artifact(exports["b1"], tmp_path / "rand", random_init)
    (row,) = profile_artifacts([artifact], load_device("host-cpu-ort"), batches=[1], **FAST).rows
    assert any("random init" in note for note in row.notes)


def test_onnx_without_a_manifest_is_profiled_on_its_own(exports, tmp_path):
    artifact = tmp_path / "bare.onnx"
    shutil.copy(exports["b1"], artifact)
    (row,) = profile_artifacts([artifact], load_device("host-cpu-ort"), batches=[1], **FAST).rows
    assert row.model is None and row.reference is None and row.cost.macs == deploy_cost(MODEL).macs
    assert any("no manifest" in note for note in row.notes)


def test_openvino_reports_what_it_compiled(exports):
    pytest.importorskip("openvino")
    rows = profile_artifacts([exports["b1"]], load_device("host-cpu-openvino"), batches=[1], **FAST).rows
    assert rows[1].runtime == "openvino" and rows[1].precision_used.startswith("fp32")
    assert rows[1].quality.agreement == 1.0 and rows[1].quality.cosine > 0.99999


def _qdq_conv(path: Path) -> None:
    """x -> Q -> DQ -> Conv(int8 weights through DQ) -> y: the smallest int8 QDQ graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(4 * 3 * 3 * 3, dtype=np.int8).reshape(4, 3, 3, 3) % 7, "w_q")
    consts = [numpy_helper.from_array(np.array(v, dtype=t), n) for n, v, t in
              [("s", 0.05, np.float32), ("z", 0, np.uint8), ("ws", 0.02, np.float32), ("wz", 0, np.int8)]]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w_q", "ws", "wz"], ["w"]),
             helper.make_node("Conv", ["xd", "w"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [weight, *consts])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_an_int8_qdq_graph_reports_int8_and_its_weights_count(tmp_path):
    from deploykit import runtimes

    path = tmp_path / "qdq.onnx"
    _qdq_conv(path)
    runnable = runtimes.load(path, load_device("host-cpu-ort"))
    assert runnable.precision_used.startswith("int8 (QDQ)")
    assert runnable.run(np.zeros((1, 3, 8, 8), np.float32)).shape == (1, 4, 8, 8)
    cost = onnx_cost(path)
    assert (cost.params, cost.macs) == (4 * 3 * 9, 8 * 8 * 4 * 3 * 9)  # followed through DequantizeLinear


def test_labelled_data_gives_top1_for_every_row(data_dir, tmp_path):
    """resnet20_cifar with its released weights on 64 CIFAR-10 test images."""
    weights = data_dir / "weights" / "cifar10_resnet" / "resnet20-12fca82f.th"
    artifact = export(ExportRequest(model=MODEL, weights=weights, out_dir=tmp_path)).artifact
    rows = profile_artifacts([artifact], load_device("host-cpu-ort"), data=data_dir / "cifar10" / "test",
                             limit=64, batches=[1], **FAST).rows
    float_row, onnx_row = rows
    assert float_row.quality.n == onnx_row.quality.n == 64 and "64 of 10000" in onnx_row.quality.inputs
    assert float_row.quality.top1 == onnx_row.quality.top1 > 0.6 and onnx_row.quality.top5 >= onnx_row.quality.top1
    assert onnx_row.quality.agreement == 1.0


def test_an_outside_graph_of_unknown_size_names_a_fix_profile_has(tmp_path):
    """`profile dynamic.onnx` said "pass --size", an option only eval has (issue 15, item 15)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from deploykit.core.errors import DeployKitError

    weight = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["p"]),
         helper.make_node("Flatten", ["p"], ["y"])], "dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "dynamic.onnx"))
    with pytest.raises(DeployKitError) as err:
        profile_artifacts([tmp_path / "dynamic.onnx"], load_device("host-cpu-ort"), **FAST)
    assert "dynamic.onnx has no manifest" in err.value.message
    assert "--size" not in err.value.fix and "exported by deploykit" in err.value.fix
