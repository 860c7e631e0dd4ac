"""The agent's artifact store: content-addressed and consistent across crashes and restarts.

    STORE/objects/<sha256>/   whole artifacts: artifact.onnx | artifact.mlpackage/ | artifact.trt/, the
                              manifest beside a directory artifact, and meta.json (written last)
    STORE/engines/<sha256>/   TensorRT engines built on this machine from a stored bundle
    STORE/tmp/                uploads and extractions in progress
    STORE/deploykit-agent-store.json   the marker: this folder is a store the agent made (and may clean)

An upload streams into tmp/, is fsynced, and only when its bytes hash to the sha256 the client announced
is an object directory assembled in tmp/ and renamed into objects/ in one step: a reader sees a whole
artifact or none. Every path under the store derives from that computed sha256 and fixed names; nothing a
client sends becomes a path. `sweep` (run at start) removes whatever a crash or a kill left in tmp/.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deploykit.agent.wire import ARCHIVE_MANIFEST, ARCHIVE_ROOT, WireError, extract_checked, is_sha256, is_tar
from deploykit.core.errors import DeployKitError
from deploykit.core.manifest import MANIFEST_SUFFIX, Manifest

KIND_NAMES = {"onnx": "artifact.onnx", "mlpackage": "artifact.mlpackage", "tensorrt": "artifact.trt"}
META = "meta.json"
MARKER = "deploykit-agent-store.json"  # written when the agent creates a store: only such a folder is cleaned


class StoreError(Exception):
    """A refused upload or load, with the HTTP status the agent answers it with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class StoredArtifact:
    sha256: str
    kind: str  # a key of KIND_NAMES
    size_bytes: int  # of the bytes received (the archive, for a directory)
    path: Path

    def to_dict(self) -> dict:
        return {"sha256": self.sha256, "kind": self.kind, "size_bytes": self.size_bytes}


class Upload:
    """Bytes streaming into a temp file under tmp/, hashed as they arrive and capped at `limit`."""

    def __init__(self, tmp_dir: Path, limit: int) -> None:
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=tmp_dir)
        self.path, self.file, self.limit = Path(name), os.fdopen(fd, "wb"), limit
        self.size, self._hash = 0, hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise StoreError(413, f"upload larger than the agent's limit of {self.limit / 2**20:g} MiB "
                                  f"(deploykit agent serve --max-upload-mb)")
        self._hash.update(chunk)
        self.file.write(chunk)

    def finish(self) -> str:
        """Flush to disk; the sha256 of everything written."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return self._hash.hexdigest()

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.path.unlink(missing_ok=True)


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects, self.engines, self.tmp = self.root / "objects", self.root / "engines", self.root / "tmp"
        _adopt(self.root)
        for directory in (self.objects, self.engines, self.tmp):
            directory.mkdir(exist_ok=True)

    def claim(self) -> None:
        """Hold the store for this process (an advisory lock the kernel drops when the process dies, even by
        SIGKILL): a second agent on the same store would sweep the first one's uploads."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        self._lock_file = open(self.root / "agent.lock", "a")  # noqa: SIM115 - held until the process ends
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock_file.close()
            raise DeployKitError(f"another agent is using the store {self.root}",
                                 fix="stop it, or give this one its own --store") from exc

    def sweep(self) -> list[str]:
        """Remove leftovers of interrupted uploads and builds; the names removed."""
        removed = [p.name for p in self.tmp.iterdir()]
        for path in self.tmp.iterdir():
            _remove(path)
        for parent in (self.objects, self.engines):
            for path in parent.iterdir():
                if not is_sha256(path.name) or (parent is self.objects and not (path / META).is_file()):
                    removed.append(f"{parent.name}/{path.name}")
                    _remove(path)
        return removed

    def find(self, sha256: str) -> StoredArtifact | None:
        if not is_sha256(sha256):
            return None
        meta = self.objects / sha256 / META
        if not meta.is_file():
            return None
        data = json.loads(meta.read_text())
        kind = data["kind"]
        return StoredArtifact(sha256, kind, data["size_bytes"], meta.parent / KIND_NAMES[kind])

    def count(self) -> int:
        return sum(1 for p in self.objects.iterdir() if (p / META).is_file())

    def begin(self, limit: int) -> Upload:
        return Upload(self.tmp, limit)

    def commit(self, upload: Upload, sha256: str) -> StoredArtifact:
        """Check the received bytes against `sha256` and publish them as one object, or raise StoreError
        and leave nothing behind."""
        try:
            computed = upload.finish()
            if computed != sha256:
                raise StoreError(400, f"the received bytes hash to {computed}, not {sha256}")
            staging = Path(tempfile.mkdtemp(prefix="object-", dir=self.tmp))
            try:
                kind = _stage(upload.path, staging)
                _write_synced(staging / META, json.dumps({"sha256": sha256, "kind": kind,
                                                          "size_bytes": upload.size}))
                self._publish(staging, self.objects / sha256)
            finally:
                _remove(staging)
        finally:
            upload.discard()
        return self.find(sha256)

    def runnable_path(self, stored: StoredArtifact, runtime: str) -> Path:
        """The path a runtime loads: a TensorRT bundle gets an engine built here (once); other runtimes
        given a bundle run the ONNX inside it."""
        from deploykit.core.tensorrt_plan import ONNX_FILE

        if runtime == "tensorrt":
            if stored.kind != "tensorrt":
                raise StoreError(422, "a TensorRT device takes a TensorRT bundle (export --target tensorrt)")
            return self._engine_bundle(stored)
        return stored.path / ONNX_FILE if stored.kind == "tensorrt" else stored.path

    def _engine_bundle(self, stored: StoredArtifact) -> Path:
        from deploykit.core.tensorrt_plan import ENGINE_FILE, ONNX_FILE, PLAN_FILE
        from deploykit.runtimes.tensorrt import build_engine

        bundle = self.engines / stored.sha256 / KIND_NAMES["tensorrt"]
        if (bundle / ENGINE_FILE).is_file():
            return bundle
        staging = Path(tempfile.mkdtemp(prefix="engine-", dir=self.tmp))
        try:
            target = staging / KIND_NAMES["tensorrt"]
            target.mkdir()
            plan = _checked_plan(stored.path)
            for name in (ONNX_FILE, PLAN_FILE):
                shutil.copyfile(stored.path / name, target / name)
            manifest = stored.path.with_name(stored.path.name + MANIFEST_SUFFIX)
            if manifest.is_file():
                shutil.copyfile(manifest, staging / manifest.name)
            build_engine(target, plan)
            self._publish(staging, self.engines / stored.sha256)
        finally:
            _remove(staging)
        return bundle

    def _publish(self, staging: Path, final: Path) -> None:
        _fsync_dir(staging)
        try:
            os.rename(staging, final)
        except OSError:
            if not final.is_dir():  # else a concurrent upload of the same bytes won: same content
                raise
        _fsync_dir(final.parent)


def _adopt(root: Path) -> None:
    """Make sure `root` is a store this agent may clean: one it created (its MARKER file is there), or a new
    or empty folder, which gets the marker now. `sweep` deletes whatever it finds under tmp/, objects/ and
    engines/: run on an existing folder it once destroyed a git repository's objects/, so a non-empty
    folder without the marker is refused. (A store of an older agent, holding only the store's own names
    and its lock file, is adopted.)"""
    if root.exists() and not root.is_dir():
        raise DeployKitError(f"--store {root} is a file", fix="give --store a new or empty folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        entries = {p.name for p in root.iterdir()}
    except OSError as exc:
        raise DeployKitError(f"cannot use --store {root}: {exc.strerror or exc}",
                             fix="give --store a folder you can write in") from exc
    if MARKER in entries:
        return
    older_agent = "agent.lock" in entries and entries <= {"agent.lock", "objects", "engines", "tmp"}
    if entries and not older_agent:
        raise DeployKitError(f"--store {root} is a folder with other files in it ({', '.join(sorted(entries)[:5])}"
                             f"{', ...' if len(entries) > 5 else ''}), not an agent store: the agent cleans its "
                             "store's tmp/, objects/ and engines/ at start, so it only uses a folder it created",
                             fix=f"give --store a new or empty folder (default {Path.home() / '.deploykit'}/agent-store)")
    _write_synced(root / MARKER, json.dumps({"deploykit_agent_store": 1}) + "\n")


def _stage(blob: Path, staging: Path) -> str:
    """Lay the received blob out in `staging` as an object; its kind."""
    if not is_tar(blob):
        os.rename(blob, staging / KIND_NAMES["onnx"])
        return "onnx"
    unpacked = staging / "unpacked"
    unpacked.mkdir()
    try:
        extract_checked(blob, unpacked)
        kind = _directory_kind(unpacked / ARCHIVE_ROOT)
        os.rename(unpacked / ARCHIVE_ROOT, staging / KIND_NAMES[kind])
        if (unpacked / ARCHIVE_MANIFEST).is_file():
            _check_manifest(unpacked / ARCHIVE_MANIFEST)
            os.rename(unpacked / ARCHIVE_MANIFEST, staging / (KIND_NAMES[kind] + MANIFEST_SUFFIX))
    except WireError as exc:
        raise StoreError(422, str(exc)) from exc
    finally:
        _remove(unpacked)
    return kind


def _directory_kind(directory: Path) -> str:
    if (directory / "plan.json").is_file():
        return "tensorrt"
    if (directory / "Manifest.json").is_file():
        return "mlpackage"
    raise WireError("the archive's artifact/ is neither a Core ML package (Manifest.json) nor a TensorRT "
                    "bundle (plan.json)")


def _check_manifest(path: Path) -> None:
    try:
        Manifest.read(path)
    except (ValueError, TypeError, KeyError) as exc:
        raise WireError(f"the archive's {ARCHIVE_MANIFEST} is not a deploykit manifest: {exc}") from exc


def _checked_plan(bundle: Path):
    """The bundle's build plan with file names fixed to ours (a plan's names never become paths here)."""
    from deploykit.core.fsutil import sha256_file
    from deploykit.core.tensorrt_plan import CACHE_FILE, ENGINE_FILE, ONNX_FILE, PLAN_FILE, BuildPlan

    try:
        plan = BuildPlan.read(bundle / PLAN_FILE)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise StoreError(422, f"the bundle's {PLAN_FILE} is not a deploykit TensorRT plan: {exc}") from exc
    if plan.precision not in ("fp32", "fp16", "int8") or not 1 <= int(plan.workspace_mib) <= 1 << 16:
        raise StoreError(422, f"the bundle's {PLAN_FILE} asks for precision {plan.precision!r}, "
                              f"workspace {plan.workspace_mib} MiB")
    if not (bundle / ONNX_FILE).is_file() or sha256_file(bundle / ONNX_FILE) != plan.onnx_sha256:
        raise StoreError(422, f"the bundle's {ONNX_FILE} is missing or differs from the one its plan names")
    return dataclasses.replace(plan, onnx=ONNX_FILE, engine=ENGINE_FILE, timing_cache=CACHE_FILE)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
