"""The pipeline cache: full-sha256 keys over everything that changes a result, content hashes of data,
complete-or-absent entries, and no reuse of a damaged artifact."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from deploykit.core.digest import canonical_json, content_digest, sha256_json
from deploykit.core.manifest import Manifest, manifest_path
from deploykit.pipeline.cache import PipelineCache
from deploykit.pipeline.plan import make_plan
from deploykit.pipeline.recipe import load_recipe

HEX64 = frozenset("0123456789abcdef")


def _old(path: Path) -> Path:
    """Backdate a file beyond the memo's racy window (a fresh write may hide a same-second edit)."""
    past = time.time() - 60
    os.utime(path, (past, past))
    return path


def test_canonical_json_is_one_spelling_per_value():
    assert canonical_json({"b": 1, "a": (1, Path("x"))}) == canonical_json({"a": [1, "x"], "b": 1}) == \
        '{"a":[1,"x"],"b":1}'
    key = sha256_json({"a": 1})
    assert len(key) == 64 and set(key) <= HEX64  # full digests, never prefixes


def test_folder_digest_sees_contents_names_and_membership(tmp_path):
    folder = tmp_path / "calib"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "1.jpg").write_bytes(b"one")
    (folder / "cat" / "2.jpg").write_bytes(b"two")
    base = content_digest(folder)
    (folder / "cat" / "2.jpg").write_bytes(b"tw0")  # same size, new bytes
    assert content_digest(folder) != base
    (folder / "cat" / "2.jpg").write_bytes(b"two")
    assert content_digest(folder) == base
    (folder / "cat" / "2.jpg").rename(folder / "cat" / "3.jpg")
    assert content_digest(folder) != base
    (folder / "cat" / "3.jpg").rename(folder / "cat" / "2.jpg")
    (folder / "cat" / "4.jpg").write_bytes(b"")
    assert content_digest(folder) != base


def test_memo_skips_rereading_only_while_the_stat_signature_holds(tmp_path):
    data, memo = tmp_path / "w.bin", tmp_path / "memo.json"
    data.write_bytes(b"weights v1")
    _old(data)
    first = content_digest(data, memo=memo)
    assert json.loads(memo.read_text())[str(data.resolve())]["sha256"] == first
    data.write_bytes(b"weights v2")  # same size: the new mtime changes the signature
    assert content_digest(data, memo=memo) != first


def test_memo_is_not_written_for_files_modified_just_now(tmp_path):
    data, memo = tmp_path / "w.bin", tmp_path / "memo.json"
    data.write_bytes(b"fresh")
    content_digest(data, memo=memo)
    assert not memo.exists()


def test_memo_sees_an_in_place_edit_that_restores_size_and_mtime(tmp_path):
    """`touch -r` after an edit kept the stat signature (path, size, mtime, inode): the stale digest was
    served from the memo (issue 15, item 4). The ctime cannot be set back."""
    data, memo = tmp_path / "w.bin", tmp_path / "memo.json"
    data.write_bytes(b"weights v1")
    _old(data)
    before = data.stat()
    first = content_digest(data, memo=memo)
    assert content_digest(data, memo=memo) == first  # the memo serves it
    time.sleep(0.01)  # a later ctime tick
    with open(data, "r+b") as f:  # in place: same inode, same size
        f.write(b"WEIGHTS")
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = data.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert content_digest(data, memo=memo) == content_digest(data) != first


def _fake_export(out: Path, payload: bytes = b"graph") -> Path:
    artifact = out / "m.onnx"
    artifact.write_bytes(payload)
    Manifest(model="m", target="onnx", artifact=artifact.name, weights_sha256="w", preprocess={},
             input_shape=[1, 3, 8, 8]).finalize(artifact).write(manifest_path(artifact))
    return artifact


def test_entry_is_published_whole_and_reused(tmp_path):
    cache = PipelineCache(tmp_path / "cache")
    key = sha256_json({"stage": 1})
    assert cache.artifact(key) is None
    built = cache.build_artifact(key, {"stage": 1}, _fake_export)
    assert built.artifact == tmp_path / "cache" / "artifacts" / key / "m.onnx"
    again = cache.artifact(key)
    assert again is not None and again.sha256 == built.sha256 == content_digest(built.artifact)
    assert [p.name for p in (tmp_path / "cache" / "artifacts").iterdir()] == [key]  # no staging left behind


def test_failed_build_leaves_nothing(tmp_path):
    cache = PipelineCache(tmp_path / "cache")

    def broken(out: Path) -> Path:
        _fake_export(out)
        raise RuntimeError("parity failed")

    with pytest.raises(RuntimeError):
        cache.build_artifact("k" * 64, {}, broken)
    assert cache.artifact("k" * 64) is None
    assert list((tmp_path / "cache" / "artifacts").iterdir()) == []


def test_damaged_artifact_is_not_served(tmp_path):
    cache = PipelineCache(tmp_path / "cache")
    built = cache.build_artifact("d" * 64, {}, _fake_export)
    built.artifact.write_bytes(b"grAph")
    assert cache.artifact("d" * 64) is None
    rebuilt = cache.build_artifact("d" * 64, {}, _fake_export)  # replaces the damaged entry
    assert cache.artifact("d" * 64) is not None and rebuilt.artifact.read_bytes() == b"graph"


def test_measurements_round_trip(tmp_path):
    cache = PipelineCache(tmp_path)
    assert cache.measurement("m" * 64) is None
    stored = {"measurement": {"stage": "folded", "device": "host-cpu-ort", "top1": 0.5, "sqnr_db": float("inf")}}
    cache.store_measurement("m" * 64, stored)
    assert cache.measurement("m" * 64) == stored


@pytest.mark.parametrize("text", ["{}", "[]", '{"measurement": {}}', '{"measurement": {"stage": "s"}}',
                                  '{"measurement": {"stage": "s", "device": "d", "top1": "high"}}',
                                  '{"measurement": {"stage": "s", "device": "d", "typo": 1}}', "{trunc"])
def test_a_damaged_measurement_is_not_served(tmp_path, text):
    """A measurement file holding `{}` failed every later run (KeyError, "internal error") until deleted by
    hand (issue 15, item 13): it counts as absent, so it is measured again and overwritten."""
    cache = PipelineCache(tmp_path)
    (tmp_path / "measurements").mkdir()
    (tmp_path / "measurements" / f"{'m' * 64}.json").write_text(text)
    assert cache.measurement("m" * 64) is None


def test_a_cache_folder_that_is_a_file_is_one_clear_error(tmp_path):
    from deploykit.core.errors import DeployKitError

    (tmp_path / "cache").write_text("")
    with pytest.raises(DeployKitError, match="the cache folder .* is a file") as err:
        PipelineCache(tmp_path / "cache")
    assert "--cache" in err.value.fix


# --- keys of a real recipe ------------------------------------------------------------------------

RECIPE = """\
model: resnet20_cifar
weights: {weights}
data: {{eval: {eval}, limit: 20, calib: {calib}}}
devices: [host-cpu-ort]
stages:
  - name: folded
    passes: [reparameterize, fold_bn]
  - name: int8
    options: {{int8: true, calib_size: 12}}
  - name: opset18
    parent: folded
    options: {{opset: 18}}
"""


@pytest.fixture
def recipe_files(tmp_path, data_dir):
    src = data_dir / "weights/cifar10_resnet/resnet20-12fca82f.th"
    weights = tmp_path / "w.th"
    weights.write_bytes(src.read_bytes())
    calib = tmp_path / "calib" / "cat"
    calib.mkdir(parents=True)
    for i, image in enumerate(sorted((data_dir / "cifar10/train/cat").iterdir())[:3]):
        (calib / f"{i}.jpg").write_bytes(image.read_bytes())
    for path in [weights, *calib.iterdir()]:
        _old(path)
    evalset = tmp_path / "eval"
    for cls in ("cat", "dog"):
        (evalset / cls).mkdir(parents=True)
        (evalset / cls / "0.jpg").write_bytes((data_dir / f"cifar10/test/{cls}/0000.jpg").read_bytes())
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(weights=weights, eval=evalset, calib=tmp_path / "calib"))
    return path, weights, calib


def _keys(path: Path, cache: PipelineCache) -> dict[str, str]:
    plan = make_plan(load_recipe(path), path, cache)
    return {step.stage: step.key for step in plan.artifacts}


def test_keys_change_exactly_where_their_inputs_change(tmp_path, recipe_files):
    path, weights, calib = recipe_files
    cache = PipelineCache(tmp_path / "cache")
    base = _keys(path, cache)
    assert len(set(base.values())) == 3 and _keys(path, cache) == base  # deterministic, distinct
    path.write_text(path.read_text().replace("{opset: 18}", "{opset: 17}"))
    changed = _keys(path, cache)
    assert changed["opset18"] != base["opset18"] and changed["folded"] == base["folded"]
    (calib / "0.jpg").write_bytes(b"another image")  # calibration content: only the int8 stage reads it
    _old(calib / "0.jpg")
    recal = _keys(path, cache)
    assert recal["int8"] != changed["int8"] and recal["folded"] == base["folded"]
    weights.write_bytes(weights.read_bytes() + b"\0")
    _old(weights)
    assert set(_keys(path, cache).values()).isdisjoint(recal.values())  # new weights: every stage


def test_plan_marks_reuse(tmp_path, recipe_files):
    path, _, _ = recipe_files
    cache = PipelineCache(tmp_path / "cache")
    plan = make_plan(load_recipe(path), path, cache)
    assert not any(step.reused for step in plan.artifacts)
    folded = plan.step("folded")
    cache.build_artifact(folded.key, folded.inputs, _fake_export)
    replanned = make_plan(load_recipe(path), path, cache)
    assert [s.reused for s in replanned.artifacts] == [True, False, False]
    measure = next(m for m in replanned.measures if m.stage == "folded")
    assert measure.key is not None and not measure.reused  # keyed by the artifact's sha256 once it exists
    assert dataclasses.asdict(replanned.reference)["key"] == plan.reference.key


def test_folder_artifact_digest_matches_its_manifest(tmp_path):
    package = tmp_path / "m.mlpackage"
    for rel in ("Data/weights/weight.bin", "Data/model.mlmodel", "Manifest.json", "Data.x/a", "a b/c"):
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(rel)
    manifest = Manifest(model="m", target="coreml", artifact=package.name, weights_sha256="w", preprocess={},
                        input_shape=[1, 3, 8, 8]).finalize(package)
    assert content_digest(package) == manifest.sha256
