"""Values a traced graph computes from stored tensors and literals alone (a frozen norm's scale, a layer
scale's reshaped gamma, LeViT's indexed attention biases): evaluated once, so that rewrites can read them."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn


def constant_value(value, gm: fx.GraphModule, cache: dict):
    """The value of `value` when it is computed from stored tensors and literals alone, else None."""
    if not isinstance(value, fx.Node):
        return value
    if value in cache:
        return cache[value]
    result = None
    if value.op == "get_attr":
        result = fetch_attr(gm, value.target, None)
    elif value.op in ("call_function", "call_method") and not str(value.target).endswith("_") \
            and value.all_input_nodes:
        missing = []

        def value_of(node: fx.Node):
            found = constant_value(node, gm, cache)
            if found is None:
                missing.append(node)
            return found

        args, kwargs = fx.node.map_arg(value.args, value_of), fx.node.map_arg(value.kwargs, value_of)
        if not missing:
            result = _evaluate(value, list(args), dict(kwargs))
    cache[value] = result
    return result


@torch.no_grad()
def _evaluate(node: fx.Node, args: list, kwargs: dict):
    try:
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)
    except Exception:  # noqa: BLE001 - not evaluable here: treat as computed
        return None


_RAISE = object()


def fetch_attr(gm: nn.Module, target: str, default=_RAISE):
    value = gm
    for part in target.split("."):
        if default is not _RAISE and not hasattr(value, part):
            return default
        value = getattr(value, part)
    return value
