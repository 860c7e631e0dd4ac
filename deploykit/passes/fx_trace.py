"""torch.fx for passes over models deploykit has never seen: trace what traces, keep the rest as leaves,
and run the traced graph once to capture the tensors that folds are checked on."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn
from torch.utils._pytree import tree_map

from deploykit.passes.canonical import plain_batchnorm

_STANDARD = fx.Tracer()  # torch's own rule: torch.nn layers are leaves, Sequential is traced through


def is_standard_leaf(module: nn.Module) -> bool:
    return _STANDARD.is_leaf_module(module, "")


class _LeafTracer(fx.Tracer):
    """Traces through every module except torch.nn layers and the modules in `opaque` (by id)."""

    def __init__(self, opaque: set[int]) -> None:
        super().__init__()
        self.opaque = opaque

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return super().is_leaf_module(m, module_qualified_name) or id(m) in self.opaque or plain_batchnorm(m)


def untraceable(root: nn.Module) -> set[int]:
    """Ids of the submodules of `root` that fail to trace on their own (data-dependent control flow, ...).

    Descendants come before ancestors (reversed pre-order), so a parent is traced with its untraceable
    children already known as leaves: one bad child does not make the whole parent opaque."""
    opaque: set[int] = set()
    for module in reversed(list(root.modules())[1:]):
        if is_standard_leaf(module) or plain_batchnorm(module):  # a norm is a layer: nothing to fold inside
            continue
        try:
            _LeafTracer(opaque).trace(module)
        except Exception:  # noqa: BLE001 - any failure means "keep it whole, look inside separately"
            opaque.add(id(module))
    return opaque


def trace_with_leaves(module: nn.Module) -> tuple[fx.GraphModule, list[str]] | None:
    """`module` as a GraphModule plus the targets of its untraceable leaves; None if `module` itself
    cannot be traced even with such leaves."""
    # Most models trace whole; only when they do not is each submodule tried on its own.
    traced = _trace(module, set()) or _trace(module, untraceable(module))
    if traced is None:
        return None
    tracer, graph = traced
    gm = fx.GraphModule(tracer.root, graph, type(module).__name__)
    leaves = sorted({n.target for n in graph.nodes
                     if n.op == "call_module" and id(gm.get_submodule(n.target)) in tracer.opaque})
    return gm, leaves


def _trace(module: nn.Module, opaque: set[int]) -> tuple[_LeafTracer, fx.Graph] | None:
    tracer = _LeafTracer(opaque)
    try:
        graph = tracer.trace(module)
        graph.lint()  # a module that caches tensors across calls can leak another trace's nodes into this one
    except Exception:  # noqa: BLE001
        return None
    return tracer, graph


def clone_tensors(value):
    """A copy of every tensor in `value`: in-place ops later in the forward must not change a capture."""
    return tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v, value)


class Recorder(fx.Interpreter):
    """One run of a traced graph that keeps copies of the values of `keep` nodes, whether `watch` nodes
    produced tensors, and the first arguments each leaf target in `leaves` was called with; `observer`
    (node, args, result) sees every node as it runs."""

    def __init__(self, gm: fx.GraphModule, *, keep: set, watch: set, leaves: list[str], observer=None) -> None:
        super().__init__(gm)
        self.keep, self.watch, self.leaves, self.observer = keep, watch, set(leaves), observer
        self.values: dict[fx.Node, object] = {}
        self.is_tensor: dict[fx.Node, bool] = {}
        self.leaf_args: dict[str, tuple] = {}

    def run_node(self, n: fx.Node):
        if n.op == "call_module" and n.target in self.leaves and n.target not in self.leaf_args:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            if not kwargs:  # a leaf is re-run positionally when it is folded on its own
                self.leaf_args[n.target] = clone_tensors(args)
        result = super().run_node(n)
        if self.observer is not None:
            self.observer(n, self.fetch_args_kwargs_from_env(n)[0], result)
        if n in self.keep:
            self.values[n] = clone_tensors(result)
        if n in self.watch:
            self.is_tensor[n] = isinstance(result, torch.Tensor)
        return result


def callable_children(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Children a forward can call: containers (ModuleList, ModuleDict) are opened, they have no forward."""
    found = []
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            found += callable_children(child, f"{path}.")
        else:
            found.append((path, child))
    return found


@torch.no_grad()
def capture_child_inputs(module: nn.Module, args: tuple) -> dict[str, tuple]:
    """Run `module(*args)` once; the (copied) positional arguments of each child's first call, by path."""
    captured: dict[str, tuple] = {}

    def hook_for(path: str):
        def hook(_module, hook_args, hook_kwargs):
            if path not in captured and not hook_kwargs:
                captured[path] = clone_tensors(hook_args)
        return hook

    handles = [child.register_forward_pre_hook(hook_for(path), with_kwargs=True)
               for path, child in callable_children(module)]
    try:
        module(*args)
    finally:
        for handle in handles:
            handle.remove()
    return captured


@torch.no_grad()
def node_ranks(gm: fx.GraphModule, args: tuple) -> dict[fx.Node, int]:
    """The rank of every tensor the graph computes on `args` (one forward)."""
    ranks: dict[fx.Node, int] = {}

    class _Ranks(fx.Interpreter):
        def run_node(self, n: fx.Node):
            result = super().run_node(n)
            if isinstance(result, torch.Tensor):
                ranks[n] = result.dim()
            return result

    _Ranks(gm).run(*args)
    return ranks
