"""Measurements: cost model (params, MACs, memory access), latency, accuracy, reports.

Nothing here imports torch until a name is used, so `deploykit --help` stays instant.
`deploykit.profile.cost(model, input_size)` is the cost model; the names below load on first access.
"""

from __future__ import annotations

import importlib

# name -> the submodule that defines it
_LAZY = {
    "cost": "cost",  # the submodule itself, which is callable (see cost.py)
    "CostReport": "cost",
    "LayerCost": "cost",
    "PaperComparison": "cost",
    "compare_to_paper": "cost",
    "deploy_cost": "cost",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
    return module if name == _LAZY[name] else getattr(module, name)
