"""Measurements of a model or a run: cost model (params, MACs, memory access), latency, accuracy of logits,
energy, the environment, and reports. Below the zoo and the passes: it measures any module or runnable it
is given. Nothing here imports torch until a name is used, so `deploykit --help` stays instant.

`deploykit.profile.count_cost(model, input_size)` is the cost model.
"""

from __future__ import annotations

from deploykit.core.lazy import lazy_attributes

SUBMODULES = ("accuracy", "cost", "energy", "environment", "graph_cost", "latency", "report", "report_html",
              "report_template", "results")
__getattr__, __dir__ = lazy_attributes(__name__, SUBMODULES, {
    "count_cost": "cost", "count_params": "cost", "CostReport": "cost", "LayerCost": "cost"})
__all__ = ["CostReport", "LayerCost", "count_cost", "count_params"]
