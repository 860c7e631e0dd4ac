"""Resumable training state in one safetensors file, written atomically.

Tensors: the model's state (`model.*`), the optimizer's per-parameter buffers (`optim.<index>.<name>`) and
torch's RNG state (`rng.torch`). Everything else (epoch, step, optimizer hyperparameters, the LR schedule's
state, the config, the per-epoch history, the pruned structure) is JSON in the header's
`deploykit_train_state` metadata entry. One file means one atomic rename: a reader never sees weights of
one step with a schedule of another, which a pair of files cannot promise. Loading runs no pickle at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from deploykit.core.errors import DeployKitError
from deploykit.core.fsutil import atomic_path

STATE_KEY = "deploykit_train_state"
FORMAT = 1


def save_state(path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, info: dict) -> None:
    """Everything needed to continue training exactly where it stopped; `info` must be JSON-able."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    optim = optimizer.state_dict()
    for index, buffers in optim["state"].items():
        for name, value in buffers.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value.detach().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    header = {**info, "format": FORMAT, "optimizer_groups": optim["param_groups"],
              "scheduler": scheduler.state_dict()}
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata={STATE_KEY: json.dumps(header)})


def load_state(path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> dict:
    """Restore model, optimizer, schedule and RNG from `path`; returns the JSON header."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {})[STATE_KEY])
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise DeployKitError(f"{path} is not a deploykit training checkpoint ({exc})",
                             fix="delete it to start over, or pass another --out") from exc
    if header.get("format") != FORMAT:
        raise DeployKitError(f"{path} has checkpoint format {header.get('format')}, expected {FORMAT}",
                             fix="delete it to start over")
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict({"state": _optimizer_buffers(tensors), "param_groups": header["optimizer_groups"]})
    scheduler.load_state_dict(header["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    return header


def _optimizer_buffers(tensors: dict[str, torch.Tensor]) -> dict[int, dict[str, torch.Tensor]]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    return state
