"""model -> fold -> export -> run -> compare: one artifact with its manifest, or nothing at the final path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deploykit import zoo
from deploykit.core.errors import DeployKitError
from deploykit.core.manifest import Manifest
from deploykit.core.publish import (check_output_dir, check_replaceable, ensure_output_dir,
                                    new_folders_removed_on_failure, publish_artifact, staging_dir)
from deploykit.core.preprocess import Preprocess
from deploykit.core.progress import Progress, report_stage
from deploykit.passes.runner import run_passes
from deploykit.pipeline.overwrite import check_same_export, pruned_stem, request_record
from deploykit.pipeline.targets import ExportContext, TargetBuild, check_options, get_target
from deploykit.pipeline.user_model import build_user_model, factory_name
from deploykit.pipeline.weights import load_model
from deploykit.zoo import timm_source
from deploykit.zoo.weights import LoadedWeights

DEPLOY_PASSES = ("reparameterize", "fold_bn")


@dataclass(frozen=True)
class ExportRequest:
    model: str | None = None  # a zoo name; or None with `model_from`
    target: str = "onnx"
    weights: Path | None = None
    out_dir: Path = Path("artifacts")
    input_size: int | None = None
    batch: int = 1
    num_classes: int | None = None
    random_init: bool = False  # no released weights, even where the zoo has them
    options: dict = field(default_factory=dict)  # target options: opset, threads, precision, ...
    passes: tuple | None = None  # ((name, config or None), ...) in order; None: DEPLOY_PASSES, default configs
    model_from: str | None = None  # "package.module:factory": the user's own model (see user_model.py)
    prune: object | None = None  # a prune_chain.PruneRequest: prune (+ fine-tune) first, see _prune
    progress: Progress | None = field(default=None, compare=False)  # core/progress.py events: stages, training
    require_folded: bool = False  # an unfolded multi-branch sum or norm is an error (nothing written)
    force: bool = False  # replace an artifact of the same name made by a different export (see overwrite.py)

    @property
    def name(self) -> str:
        """The model's name in the manifest: the zoo model, `timm/NAME`, or the factory's name."""
        return self.model or factory_name(self.model_from)

    @property
    def artifact_name(self) -> str:
        """The artifact's file name stem (`timm/mobileone_s1` -> `timm-mobileone_s1`)."""
        return self.name.replace("/", "-")


@dataclass
class ExportOutcome:
    artifact: Path
    manifest: Manifest
    build: TargetBuild


def build_float_model(request: ExportRequest) -> LoadedWeights:
    """The float model in eval mode with its weights (`.model`, `.sha256` or 'random-init', `.form`, ...).

    Without --weights the zoo's released weights are used where it has them, as `deploykit eval` does: an
    artifact of a random init only tests the toolchain, so that takes an explicit --random-init (and is
    what a --num-classes other than the released head gets). A deploy-form checkpoint gives the deploy-form
    model, which the passes then leave as it is. The manifest's weights_sha256 names the file used.
    """
    if request.random_init and request.weights is not None:
        raise DeployKitError("--weights and --random-init exclude each other", fix="drop one of them")
    if request.model_from is not None:
        return build_user_model(request.model_from, request.weights)
    if timm_source.is_timm_name(request.model):
        return _build_timm_model(request)
    released_head = request.num_classes in (None, zoo.get(request.model).num_classes)
    return load_model(request.model, request.weights, pretrained=released_head and not request.random_init,
                      num_classes=request.num_classes)


def _build_timm_model(request: ExportRequest) -> LoadedWeights:
    """timm's model code, random init unless --weights names a local timm checkpoint (no downloads)."""
    if request.weights is None and not request.random_init:
        raise DeployKitError(f"{request.model}: deploykit never downloads weights",
                             fix="pass --weights FILE (a timm checkpoint, e.g. model.safetensors) or --random-init")
    model = timm_source.create(request.model, request.num_classes)
    if request.weights is None:
        return LoadedWeights(model)
    from deploykit.core.fsutil import sha256_file

    warnings = tuple(timm_source.load_weights(model, request.weights))
    return LoadedWeights(model.eval(), sha256_file(Path(request.weights)), Path(request.weights), "training", "timm",
                         warnings)


def probe_batch(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """A fixed pseudo-random input: the same probe for every artifact of a model."""
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def export(request: ExportRequest) -> ExportOutcome:
    """The artifact and its manifest at `out_dir`; on failure nothing, not even a folder it created."""
    with new_folders_removed_on_failure(request.out_dir):
        return _export(request)


def _export(request: ExportRequest) -> ExportOutcome:
    target = get_target(request.target)
    check_options(target, request.options)
    _check_model_source(request)
    stem = pruned_stem(request.artifact_name, request.prune)
    final = check_output_dir(request.out_dir) / target.file_name(stem, request.options)
    check_replaceable(final)  # both before the work, not after it (and again when publishing)
    preprocess = _preprocess(request)
    report_stage(request.progress, "float model")
    loaded = build_float_model(request)
    model, weights_sha = loaded.model, loaded.sha256
    identity = request_record(request, weights_sha256=weights_sha, input_size=preprocess.input_size)
    check_same_export(final, identity, force=request.force)
    pruning = None if request.prune is None else _prune(request, loaded, preprocess, stem)
    model = model if pruning is None else pruning.model  # parity is then against the pruned float model
    probe = probe_batch(request.batch, preprocess.num_channels, preprocess.input_size)
    with torch.no_grad():
        reference = model(probe).numpy()
    _check_reference(reference, loaded)
    steps = [(name, None) for name in DEPLOY_PASSES] if request.passes is None else list(request.passes)
    report_stage(request.progress, " + ".join(name for name, _ in steps) or "no passes")
    deployed = run_passes(model, steps, probe)
    _check_folded(request, deployed.records)
    ctx = ExportContext(request.name, model, deployed.model, probe, reference, preprocess, dict(request.options),
                        progress=request.progress)
    with staging_dir(final.parent) as tmp:
        staged = tmp / final.name
        build = target.build(ctx, staged)
        report_stage(request.progress, "publish")
        build.warnings[:0] = loaded.warnings
        manifest = Manifest(
            model=request.name, target=target.name, artifact=final.name, weights_sha256=weights_sha,
            preprocess=preprocess.to_dict(), input_shape=list(probe.shape), passes=deployed.records,
            parent=_parent_record(loaded), precision=build.precision,
            opset=build.details.get("opset"), parity=_parity_record(build),
            extra={**build.details, "request": identity, **({} if pruning is None else {"pruning": pruning.record})},
        ).finalize(staged)
        publish_artifact(staged, final, manifest)
    return ExportOutcome(final, manifest, build)


def _check_folded(request: ExportRequest, records) -> None:
    """--require-folded: unfolded multi-branch sums or norms stop the export before anything is written."""
    unfolded = unfolded_record(records)
    if not request.require_folded or not unfolded or not (unfolded["sums"] or unfolded["norms"]):
        return
    places = "; ".join(f"{x['where']} ({x['reason']})" for x in unfolded["first"][:3])
    raise DeployKitError(f"--require-folded: reparameterize left {unfolded['sums']} multi-branch sums and "
                         f"{unfolded['norms']} norms unfolded: {places}",
                         fix="run with -v for every place and reason, or drop --require-folded")


def unfolded_record(records) -> dict | None:
    """The reparameterize pass's account of what it left unfolded (None when the pass did not run)."""
    record = next((r for r in records if r.name == "reparameterize"), None)
    return None if record is None else record.report.get("unfolded")


def _check_reference(reference, loaded: LoadedWeights) -> None:
    """A float model whose outputs are NaN/Inf cannot be a reference: say so, with what its weights look like."""
    if not np.isfinite(reference).all():
        why = "; ".join(loaded.warnings) or f"weights: {loaded.path or 'random init'}"
        raise DeployKitError(f"the float model's outputs on the probe are NaN or Inf ({why})",
                             fix="check that --weights is the right, trained checkpoint of this model")


def _prune(request: ExportRequest, loaded: LoadedWeights, preprocess: Preprocess, stem: str):
    """The pruned (and, with fine-tune data, distilled) float model and its manifest record."""
    from deploykit.pipeline.prune_chain import prune_for_export

    if request.model is None or timm_source.is_timm_name(request.model):
        raise DeployKitError("--prune works on zoo models", fix="export a zoo MODEL, or prune your model in Python "
                                                                "with deploykit.passes.prune_channels")
    report_stage(request.progress, f"prune {request.prune.config.ratio or request.prune.config.target_macs}")
    return prune_for_export(request.model, loaded.model, loaded.path, preprocess, request.prune,
                            _ensure_dir(Path(request.out_dir)), request.progress, stem=stem)


def _check_model_source(request: ExportRequest) -> None:
    if (request.model is None) == (request.model_from is None):
        raise DeployKitError("give a zoo MODEL or --model-from package.module:factory (exactly one)",
                             fix="e.g. `deploykit export mobileone_s0`, or `deploykit export --model-from "
                                 "mypkg.models:build_net`")
    if timm_source.is_timm_name(request.model):
        timm_source.check_name(request.model)  # a wrong name fails before anything else runs
    if request.model_from is not None and request.num_classes is not None:
        raise DeployKitError("--num-classes is for zoo models; a --model-from factory builds its own head",
                             fix="drop --num-classes")


def _preprocess(request: ExportRequest) -> Preprocess:
    """A zoo or timm model's own preprocessing; a user model gets the default (ImageNet, 224, RGB)."""
    if timm_source.is_timm_name(request.model):
        base = timm_source.default_preprocess(request.model)
    else:
        base = Preprocess() if request.model_from is not None else zoo.get(request.model).preprocess
    return base.with_size(request.input_size or base.input_size)


def _parent_record(loaded: LoadedWeights) -> dict:
    """What the artifact was made from: the training form, or a checkpoint that was fused already.
    `weights` (the absolute path) lets `deploykit profile` rebuild the float original; it checks the sha256."""
    return {"kind": f"torch-{loaded.form}-form", "weights_sha256": loaded.sha256,
            "weights_file": loaded.path.name if loaded.path else None, "weights_layout": loaded.layout,
            "weights": str(Path(loaded.path).resolve()) if loaded.path else None}


def _parity_record(build: TargetBuild) -> dict:
    if build.parity is None:
        return {"passed": None, "note": build.parity_note}
    return {**build.parity.to_dict(), "probe": build.details.get("parity_probe", "randn seed 0"),
            "runtime": build.details.get("parity_runtime")}


def _ensure_dir(path: Path) -> Path:
    return ensure_output_dir(path)
