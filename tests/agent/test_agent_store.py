"""The agent's store and archive checks, without a server: nothing outside the store is ever written, a
refused upload leaves nothing behind, and what a crash leaves is swept at start."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from deploykit.agent.store import MARKER, ArtifactStore, StoreError
from deploykit.core.errors import DeployKitError
from deploykit.agent.wire import WireError, extract_checked, pack_directory, safe_members

SHA_A = "a" * 64


def _tar(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def _ingest(store: ArtifactStore, blob: bytes, sha: str | None = None):
    upload = store.begin(1 << 20)
    upload.write(blob)
    return store.commit(upload, sha or hashlib.sha256(blob).hexdigest())


def _files(root: Path) -> list[str]:
    """Every file under `root` but the store's marker."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != MARKER)


@pytest.mark.parametrize("members", [
    [(_info("/etc/evil"), b"x")],
    [(_info("artifact/../../evil"), b"x")],
    [(_info("../evil"), b"x")],
    [(_info("artifact/a/../../../evil"), b"x")],
    [(_info("artifact/link", tarfile.SYMTYPE, "/etc/passwd"), None)],
    [(_info("artifact/hard", tarfile.LNKTYPE, "/etc/passwd"), None)],
    [(_info("artifact/dev", tarfile.CHRTYPE), None)],
    [(_info("artifact/fifo", tarfile.FIFOTYPE), None)],
    [(_info("elsewhere/file"), b"x")],
    [(_info("artifact/x"), b"1"), (_info("artifact/x"), b"2")],
    [(_info("artifact\\..\\..\\evil"), b"x")],
], ids=["absolute", "dotdot", "dotdot-top", "dotdot-deep", "symlink", "hardlink", "chardev", "fifo",
        "outside", "duplicate", "backslash"])
def test_unsafe_archives_are_refused_before_any_extraction(tmp_path, members):
    archive = _tar(tmp_path, [(_info("artifact/Manifest.json"), b"{}")] + members)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(WireError):
        extract_checked(archive, dest)
    assert _files(dest) == []
    assert not (tmp_path / "evil").exists()


def test_unsafe_archive_upload_leaves_the_store_empty(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    archive = _tar(tmp_path, [(_info("artifact/plan.json"), b"{}"), (_info("artifact/../../evil"), b"x")])
    with pytest.raises(StoreError) as info:
        _ingest(store, archive.read_bytes())
    assert info.value.status == 422
    assert _files(store.root) == [] and not (tmp_path / "evil").exists()


def test_a_sha_mismatch_stores_nothing(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(StoreError) as info:
        _ingest(store, b"onnx bytes", SHA_A)
    assert info.value.status == 400 and _files(store.root) == [] and store.find(SHA_A) is None


def test_upload_cap_is_counted_on_the_bytes(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    upload = store.begin(10)
    upload.write(b"12345")
    with pytest.raises(StoreError) as info:
        upload.write(b"678901")
    upload.discard()
    assert info.value.status == 413 and _files(store.root) == []


def test_packing_is_deterministic_and_round_trips(tmp_path):
    package = tmp_path / "m.mlpackage"
    (package / "Data" / "weights").mkdir(parents=True)
    (package / "Manifest.json").write_text('{"fileFormatVersion": "1.0.0"}')
    (package / "Data" / "weights" / "weight.bin").write_bytes(os.urandom(1000))
    manifest = tmp_path / "m.mlpackage.manifest.json"
    manifest.write_text(json.dumps({"model": "m"}))

    def pack() -> bytes:
        buffer = io.BytesIO()
        pack_directory(package, buffer, manifest=manifest)
        return buffer.getvalue()

    first = pack()
    os.utime(package / "Manifest.json", (1, 1))
    assert pack() == first, "the same directory must always hash the same (the agent skips known uploads)"
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        assert [m.name for m in safe_members(tar)] == ["artifact/Data", "artifact/Data/weights",
                                                       "artifact/Data/weights/weight.bin",
                                                       "artifact/Manifest.json", "manifest.json"]


def test_a_directory_artifact_is_stored_whole_with_its_manifest(tmp_path):
    from deploykit.core.manifest import Manifest

    package = tmp_path / "m.mlpackage"
    package.mkdir()
    (package / "Manifest.json").write_text("{}")
    manifest = tmp_path / "m.mlpackage.manifest.json"
    Manifest(model="m", target="coreml", artifact=package.name, weights_sha256="random-init", preprocess={},
             input_shape=[1, 3, 8, 8], precision="fp16").write(manifest)
    buffer = io.BytesIO()
    pack_directory(package, buffer, manifest=manifest)
    stored = _ingest(ArtifactStore(tmp_path / "store"), buffer.getvalue())
    assert stored.kind == "mlpackage" and stored.path.name == "artifact.mlpackage"
    assert (stored.path / "Manifest.json").read_text() == "{}"
    assert Manifest.read(stored.path.with_name("artifact.mlpackage.manifest.json")).precision == "fp16"


def test_sweep_removes_what_an_interrupted_upload_left(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    kept = _ingest(store, b"complete")
    (store.tmp / "upload-123.part").write_bytes(b"half of it")
    (store.tmp / "object-456").mkdir()
    (store.objects / ("b" * 64)).mkdir()  # no meta.json: never published by the store itself
    (store.objects / "not-a-sha").mkdir()
    removed = ArtifactStore(store.root).sweep()
    expected = ["upload-123.part", "object-456", f"objects/{'b' * 64}", "objects/not-a-sha"]
    assert sorted(removed) == sorted(expected)
    assert _files(store.root) == [f"objects/{kept.sha256}/artifact.onnx", f"objects/{kept.sha256}/meta.json"]
    assert store.find(kept.sha256) == kept
    assert list(store.tmp.iterdir()) == []


def test_a_tensorrt_bundle_gets_its_engine_built_here_with_our_file_names(tmp_path, monkeypatch):
    """The plan's file names come from the client: the agent uses its own (and never an uploaded engine)."""
    from deploykit.core.fsutil import sha256_file
    from deploykit.core.tensorrt_plan import PLAN_FORMAT
    from deploykit.runtimes import tensorrt

    bundle = tmp_path / "m.trt"
    bundle.mkdir()
    (bundle / "model.onnx").write_bytes(b"onnx")
    plan = {"precision": "fp16", "workspace_mib": 64, "onnx_sha256": sha256_file(bundle / "model.onnx"),
            "input": {}, "output": {}, "onnx": "../../../etc/passwd", "engine": "../../evil.engine",
            "timing_cache": "/tmp/evil.cache", "format": PLAN_FORMAT}
    (bundle / "plan.json").write_text(json.dumps(plan))
    (bundle / "model.engine").write_bytes(b"built elsewhere")
    built = []

    def fake_build(directory: Path, plan) -> str:
        built.append((plan.onnx, plan.engine, plan.timing_cache))
        (directory / plan.engine).write_bytes(b"engine built here")
        return "10.0"

    monkeypatch.setattr(tensorrt, "build_engine", fake_build)
    buffer = io.BytesIO()
    pack_directory(bundle, buffer, exclude=("model.engine", "timing.cache"))
    store = ArtifactStore(tmp_path / "store")
    stored = _ingest(store, buffer.getvalue())
    assert stored.kind == "tensorrt" and not (stored.path / "model.engine").exists()
    path = store.runnable_path(stored, "tensorrt")
    assert built == [("model.onnx", "model.engine", "timing.cache")]
    assert (path / "model.engine").read_bytes() == b"engine built here"
    assert path == store.engines / stored.sha256 / "artifact.trt"
    assert store.runnable_path(stored, "tensorrt") == path and len(built) == 1, "built once"
    assert store.runnable_path(stored, "onnxruntime") == stored.path / "model.onnx"
    assert not (tmp_path / "evil.engine").exists()


def _git_like(root: Path) -> dict[str, bytes]:
    """A folder someone cares about, with the store's own subfolder names in it (a bare git repository)."""
    files = {"HEAD": b"ref: refs/heads/main\n", "objects/ab/cdef0123": b"blob", "tmp/notes.txt": b"mine",
             "engines/car.txt": b"v8"}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_a_foreign_folder_is_never_swept(tmp_path):
    """`--store DIR` on an existing folder deleted its tmp/, objects/ and engines/ at start-up: it destroyed
    a git repository's objects (issue 15, item 9). A non-empty folder without the marker is refused."""
    files = _git_like(tmp_path / "repo")
    with pytest.raises(DeployKitError) as err:
        ArtifactStore(tmp_path / "repo").sweep()
    assert "not an agent store" in err.value.message and "new or empty folder" in err.value.fix
    assert {str(p.relative_to(tmp_path / "repo")): p.read_bytes() for p in (tmp_path / "repo").rglob("*")
            if p.is_file()} == files
    (tmp_path / "file").write_text("x")
    with pytest.raises(DeployKitError, match="is a file"):
        ArtifactStore(tmp_path / "file")


def test_a_new_or_empty_folder_becomes_a_store_and_stays_one(tmp_path):
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "empty", tmp_path / "new" / "store"):
        store = ArtifactStore(root)
        assert (root / MARKER).is_file()
        kept = _ingest(store, b"bytes")
        (store.tmp / "upload-1.part").write_bytes(b"left")
        assert ArtifactStore(root).sweep() == ["upload-1.part"] and ArtifactStore(root).find(kept.sha256)


def test_a_store_of_an_older_agent_is_adopted(tmp_path):
    root = tmp_path / "old"
    for name in ("objects", "engines", "tmp"):
        (root / name).mkdir(parents=True)
    (root / "agent.lock").write_text("")
    ArtifactStore(root)
    assert (root / MARKER).is_file()
