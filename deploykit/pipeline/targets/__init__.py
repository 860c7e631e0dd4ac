"""Export targets: the target layer. One module per target owns its options, its build and its checks
(`onnx`, `coreml`, `tensorrt`), over the shared precisions (`int8`: the calibrated QDQ search; `fp16`: the
range scan; `speed`: is the int8 artifact faster on the device) and the backend adapters in
`deploykit.export`. `pipeline.export` handles everything common (model, weights, passes, manifest, atomic
publish). Backends are imported inside `build`, lazily.
"""

from __future__ import annotations

from deploykit.pipeline.targets.base import (TARGET_MODULES, TARGETS, ExportContext, Target, TargetBuild,
                                             check_options, register_target, require_parity)

__all__ = ["TARGETS", "TARGET_MODULES", "ExportContext", "Target", "TargetBuild", "check_options", "get_target",
           "register_target", "require_parity", "target_names"]


def get_target(name: str) -> Target:
    return TARGETS.get(name)


def target_names() -> list[str]:
    return TARGETS.names()
