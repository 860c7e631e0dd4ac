"""The content-addressed pipeline cache: artifacts and measurements under the full sha256 of their inputs.

Layout (default `.deploykit-cache/` in the working directory, see `core.paths.pipeline_cache_dir`):

    artifacts/<key>/<model><suffix>      the artifact with its manifest, as `export` wrote it
    artifacts/<key>/entry.json           what the key was made of + the artifact's sha256, written last
    measurements/<key>.json              a measurement (accuracy, agreement, latency) as JSON
    measurements/<key>.npy               logits, when a measurement keeps them (the float reference)
    digests.json                         memo of content digests (see `core.digest`)

An entry exists only once complete (built in a staging folder, renamed into place), and a reused
artifact is re-hashed and compared with its entry, so a damaged or edited file is rebuilt, not served.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np

from deploykit.core.digest import content_digest
from deploykit.core.errors import DeployKitError
from deploykit.core.fsutil import atomic_path, write_text_atomic
from deploykit.core.manifest import Manifest, manifest_path
from deploykit.pipeline.check import Measurement

ENTRY_FILE = "entry.json"


@dataclass(frozen=True)
class CachedArtifact:
    key: str
    artifact: Path
    sha256: str
    manifest: Manifest


class PipelineCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if os.path.exists(self.root) and not self.root.is_dir():
            raise DeployKitError(f"the cache folder {self.root} is a file",
                                 fix="pass a folder to --cache (or $DEPLOYKIT_PIPELINE_CACHE), or move the file")

    @property
    def memo(self) -> Path:
        return self.root / "digests.json"

    def digest(self, path: Path) -> str:
        """Full sha256 of a file's or folder's contents (memoized by stat signature)."""
        return content_digest(path, memo=self.memo)

    # --- artifacts --------------------------------------------------------------------------------

    def artifact(self, key: str, *, verify: bool = True) -> CachedArtifact | None:
        """The complete, intact entry for `key`, or None."""
        folder = self.root / "artifacts" / key
        try:
            entry = json.loads((folder / ENTRY_FILE).read_text())
            artifact = folder / entry["artifact"]
            manifest = Manifest.read(manifest_path(artifact))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not artifact.exists() or manifest.sha256 != entry.get("sha256"):
            return None
        if verify and content_digest(artifact) != entry["sha256"]:
            return None
        return CachedArtifact(key, artifact, entry["sha256"], manifest)

    def build_artifact(self, key: str, inputs: dict, build: Callable[[Path], Path]) -> CachedArtifact:
        """Run `build(out_dir) -> artifact path` in a staging folder and publish it under `key`."""
        parent = self.root / "artifacts"
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=parent))
        try:
            artifact = build(staging)
            manifest = Manifest.read(manifest_path(artifact))
            entry = {"key": key, "artifact": artifact.name, "sha256": manifest.sha256, "inputs": inputs}
            write_text_atomic(staging / ENTRY_FILE, json.dumps(entry, indent=2, sort_keys=True) + "\n")
            self._publish(staging, parent / key)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        published = self.artifact(key, verify=False)
        if published is None:
            raise RuntimeError(f"cache entry {key} vanished after publishing")
        return published

    @staticmethod
    def _publish(staging: Path, final: Path) -> None:
        if final.exists():  # damaged (else it would have been reused) or published concurrently
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(staging, final)
        except OSError:
            if not (final / ENTRY_FILE).is_file():  # another process won the race: keep theirs
                raise

    # --- measurements -----------------------------------------------------------------------------

    def measurement(self, key: str, valid: Callable[[object], bool] | None = None) -> dict | None:
        """The stored measurement, or None when absent or not one (a damaged or hand-edited file, `{}`, is
        measured again and overwritten, never served). `valid` says what a record of the caller's kind
        looks like (default: a `deploykit run` measurement)."""
        try:
            data = json.loads((self.root / "measurements" / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        return data if (valid or _is_measurement)(data) else None

    def logits(self, key: str) -> np.ndarray | None:
        path = self.root / "measurements" / f"{key}.npy"
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def store_measurement(self, key: str, value: dict, logits: np.ndarray | None = None) -> None:
        """Logits first, JSON last: a measurement whose JSON exists is complete."""
        folder = self.root / "measurements"
        if logits is not None:
            with atomic_path(folder / f"{key}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, logits, allow_pickle=False)
        write_text_atomic(folder / f"{key}.json", json.dumps(value, indent=2, sort_keys=True) + "\n")


def _is_measurement(data: object) -> bool:
    """`{"measurement": {...}}` whose fields are a Measurement's, with numbers where it keeps numbers."""
    record = data.get("measurement") if isinstance(data, dict) else None
    if not isinstance(record, dict) or not {"stage", "device"} <= set(record) <= set(MEASUREMENT_FIELDS):
        return False
    for name, value in record.items():
        kind = MEASUREMENT_FIELDS[name]
        if value is not None and not (isinstance(value, kind) and isinstance(value, bool) == (kind is bool)):
            return False
    return True


MEASUREMENT_FIELDS = {f.name: {"str": str, "bool": bool}.get(f.type, (int, float)) for f in fields(Measurement)}
