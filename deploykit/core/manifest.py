"""The manifest every artifact carries (JSON beside it): where it came from and how it was checked."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deploykit.core.digest import artifact_size, folder_digest
from deploykit.core.errors import DeployKitError
from deploykit.core.fsutil import sha256_file, write_text_atomic
from deploykit.core.preprocess import Preprocess
from deploykit.core.tensorrt_plan import CACHE_FILE, ENGINE_FILE, PLAN_FILE

MANIFEST_SUFFIX = ".manifest.json"
TRACKED_TOOLS = ("deploykit", "torch", "onnx", "onnxruntime", "onnxsim", "openvino", "coremltools", "tensorrt",
                 "litert-torch", "ai-edge-litert", "executorch", "torchao")


def tool_versions(names: tuple[str, ...] = TRACKED_TOOLS) -> dict[str, str]:
    """Installed versions of the tools that can change an artifact (absent ones left out)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class PassRecord:
    name: str
    config: dict
    report: dict = field(default_factory=dict)


@dataclass
class Manifest:
    model: str
    target: str
    artifact: str  # file name, relative to the manifest
    weights_sha256: str  # or "random-init"
    preprocess: dict
    input_shape: list[int]
    passes: list[PassRecord] = field(default_factory=list)
    parent: dict = field(default_factory=dict)  # {"kind": "torch-training-form", "sha256": ...}
    precision: str = "fp32"
    opset: int | None = None
    versions: dict = field(default_factory=tool_versions)
    parity: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    sha256: str = ""
    size_bytes: int = 0

    def finalize(self, artifact_path: Path) -> "Manifest":
        """Record the artifact's hash and size (after it is complete)."""
        self.sha256 = sha256_file(artifact_path) if artifact_path.is_file() else folder_digest(artifact_path)
        self.size_bytes = artifact_size(artifact_path)
        return self

    def preprocessing(self) -> Preprocess:
        """The preprocessing the artifact was exported with: every reader of a manifest gets it here."""
        try:
            return Preprocess.from_dict(self.preprocess)
        except (ValueError, TypeError, KeyError) as exc:
            raise DeployKitError(f"cannot read {self.artifact}{MANIFEST_SUFFIX}: {exc}",
                                 fix="re-export the artifact, or remove the manifest and pass options") from exc

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    def write(self, path: Path) -> None:
        write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        data["passes"] = [PassRecord(**p) for p in data.get("passes", [])]
        return cls(**data)


def manifest_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


# Files a TensorRT bundle gains where it runs (`trtexec --saveEngine`): the bundle is still the exported one
# when only these differ from what its manifest hashed.
BUILT_IN_PLACE = (ENGINE_FILE, CACHE_FILE)


def verified_manifest(artifact: Path) -> Manifest | None:
    """The manifest beside `artifact` (None when there is none), once the artifact is checked to be the one
    it describes: its sha256 must equal the manifest's. A pair that disagrees (an export killed between
    publishing the two, a file replaced by hand) is refused rather than described by the wrong manifest."""
    artifact, file = Path(artifact), manifest_path(Path(artifact))
    if not file.is_file():
        return None
    try:
        manifest = Manifest.read(file)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DeployKitError(f"cannot read {file}: {exc}", fix="re-export the artifact") from exc
    if artifact.exists() and not _matches(artifact, manifest.sha256):
        recorded = f"sha256 {manifest.sha256[:12]}…" if manifest.sha256 else "no sha256"
        raise DeployKitError(f"{artifact} is not the artifact its manifest describes ({recorded} in {file.name}): "
                             "an export was interrupted while publishing it, or the file was replaced",
                             fix="re-export it (or remove the stale manifest to use the file as an outside model)")
    return manifest


def _matches(artifact: Path, sha256: str) -> bool:
    if artifact.is_file():
        return sha256_file(artifact) == sha256
    if folder_digest(artifact) == sha256:
        return True
    return (artifact / PLAN_FILE).is_file() and folder_digest(artifact, skip=BUILT_IN_PLACE) == sha256
