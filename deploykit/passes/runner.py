"""Apply passes in order, checking each on a probe batch: a pass that moves the output names itself."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deploykit.core.compare import Comparison, compare_outputs
from deploykit.core.errors import ParityError
from deploykit.core.manifest import PassRecord
from deploykit.passes.registry import PASSES, PassResult


@dataclass
class PassOutcome:
    model: nn.Module
    records: list[PassRecord]


def run_passes(model: nn.Module, steps: list[tuple[str, object | None]], probe: torch.Tensor,
               precision: str = "fp32") -> PassOutcome:
    """`steps` are (pass name, config or None for the default config)."""
    records = []
    reference = _forward(model, probe)
    for name, config in steps:
        entry = PASSES.get(name)
        config = entry.config_type() if config is None else config
        model, report = _unwrap(entry.fn(model, config, example_input=probe) if entry.takes_probe
                                else entry.fn(model, config))
        comparison = compare_outputs(reference, _forward(model, probe), precision)
        if not comparison:
            raise ParityError(f"pass {name!r} changed the model's output: {comparison.summary()}")
        records.append(PassRecord(name, entry.config_dict(config), {"probe": _brief(comparison), **report}))
    return PassOutcome(model, records)


def _unwrap(result: nn.Module | PassResult) -> tuple[nn.Module, dict]:
    return (result.model, result.report) if isinstance(result, PassResult) else (result, {})


@torch.no_grad()
def _forward(model: nn.Module, probe: torch.Tensor):
    return model(probe).numpy()


def _brief(c: Comparison) -> dict:
    return {"max_rel_err": c.max_rel_err, "passed": c.passed}
