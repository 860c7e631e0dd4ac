"""model -> fold -> export -> run -> compare: one artifact with its manifest, or nothing at the final path."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from deploykit import zoo
from deploykit.core.manifest import Manifest, manifest_path
from deploykit.core.fsutil import sha256_file
from deploykit.passes.runner import run_passes
from deploykit.pipeline.targets import ExportContext, TargetBuild, check_options, get_target
from deploykit.zoo.checkpoint import load_into, read_state_dict

DEPLOY_PASSES = ("reparameterize", "fold_bn")


@dataclass(frozen=True)
class ExportRequest:
    model: str
    target: str = "onnx"
    weights: Path | None = None
    out_dir: Path = Path("artifacts")
    input_size: int | None = None
    batch: int = 1
    num_classes: int | None = None
    options: dict = field(default_factory=dict)  # target options: opset, threads, precision, ...


@dataclass
class ExportOutcome:
    artifact: Path
    manifest: Manifest
    build: TargetBuild


def build_float_model(request: ExportRequest) -> tuple[torch.nn.Module, str]:
    """The training-time model in eval mode, with its weights' sha256 (or 'random-init')."""
    model = zoo.create(request.model, num_classes=request.num_classes)
    if request.weights is None:
        return model, "random-init"
    load_into(model, read_state_dict(request.weights), source=f"weights {request.weights}")
    return model.eval(), sha256_file(Path(request.weights))


def probe_batch(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """A fixed pseudo-random input: the same probe for every artifact of a model."""
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def export(request: ExportRequest) -> ExportOutcome:
    target = get_target(request.target)
    check_options(target, request.options)
    entry = zoo.get(request.model)
    preprocess = entry.preprocess.with_size(request.input_size or entry.input_size)
    model, weights_sha = build_float_model(request)
    probe = probe_batch(request.batch, preprocess.num_channels, preprocess.input_size)
    with torch.no_grad():
        reference = model(probe).numpy()
    deployed = run_passes(model, [(name, None) for name in DEPLOY_PASSES], probe)
    ctx = ExportContext(request.model, model, deployed.model, probe, reference, preprocess, dict(request.options))
    final = Path(request.out_dir) / f"{request.model}{target.suffix}"
    with tempfile.TemporaryDirectory(dir=_ensure_dir(final.parent), prefix=".deploykit-") as tmp:
        staged = Path(tmp) / final.name
        build = target.build(ctx, staged)
        manifest = Manifest(
            model=request.model, target=target.name, artifact=final.name, weights_sha256=weights_sha,
            preprocess=preprocess.to_dict(), input_shape=list(probe.shape), passes=deployed.records,
            parent={"kind": "torch-training-form", "weights_sha256": weights_sha}, precision=build.precision,
            opset=build.details.get("opset"), parity=_parity_record(build), extra=build.details,
        ).finalize(staged)
        _publish(staged, final, manifest)
    return ExportOutcome(final, manifest, build)


def _parity_record(build: TargetBuild) -> dict:
    if build.parity is None:
        return {"passed": None, "note": build.parity_note}
    return {**build.parity.to_dict(), "probe": "randn seed 0", "runtime": build.details.get("parity_runtime")}


def _publish(staged: Path, final: Path, manifest: Manifest) -> None:
    """Manifest first, then the artifact by rename: a visible artifact always has its manifest."""
    manifest.write(manifest_path(final))
    if final.is_dir():
        shutil.rmtree(final)  # directory artifacts (.mlpackage) cannot be replaced by rename
    shutil.move(str(staged), str(final))


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
