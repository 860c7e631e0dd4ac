"""Loading weights safely: `weights_only=True` for pickles, safetensors otherwise. Never runs pickled code."""

from __future__ import annotations

import os
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from deploykit.core.errors import DeployKitError

PICKLE_SUFFIXES = {".pth", ".pt", ".th", ".bin", ".ckpt", ".tar"}  # .tar: apple/ml-mobileone's `.pth.tar`
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped (`state_dict`/`model` keys, `module.` prefix)."""
    path = Path(path)
    if not path.is_file():
        what = "is not a regular file" if os.path.exists(path) else "not found"
        raise DeployKitError(f"weights file {what}: {path}", fix="check the --weights path")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    elif path.suffix in PICKLE_SUFFIXES:
        state = _read_pickle(path)
    else:
        raise DeployKitError(f"unsupported weights format {path.suffix!r}",
                             fix=f"use .safetensors or one of {', '.join(sorted(PICKLE_SUFFIXES))}")
    return _strip_prefix(_unwrap(state, path), "module.")


def _read_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DeployKitError(f"{path} is not a valid safetensors file: {exc}",
                             fix="re-download or re-save the checkpoint") from exc


def _read_pickle(path: Path) -> dict:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol notices are noise; failures raise
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = _unsafe_globals(path)
        if not unsafe:  # garbage bytes surface as UnpicklingError too
            raise DeployKitError(f"{path} is not a readable PyTorch checkpoint (corrupt pickle stream)",
                                 fix="re-download or re-save the checkpoint") from exc
        raise DeployKitError(
            f"{path} holds pickled objects that would run code on load ({', '.join(unsafe[:3])}); "
            "deploykit refuses to load it",
            fix="re-save it as a plain state_dict (torch.save(model.state_dict(), ...)) or as .safetensors",
        ) from exc
    except Exception as exc:  # noqa: BLE001 - garbage bytes make the restricted unpickler raise
        # anything (IndexError, KeyError, UnicodeDecodeError, ...); it cannot run code, so all mean "corrupt"
        raise DeployKitError(f"{path} is not a readable PyTorch checkpoint ({_first_line(exc)})",
                             fix="re-download or re-save the checkpoint") from exc


# Globals a plain tensor checkpoint references. Only exact names (and torch's storage and dtype classes):
# a prefix such as "builtins." would pass builtins.eval, "torch." torch.hub.load.
SAFE_GLOBALS = frozenset({
    "collections.OrderedDict", "_codecs.encode", "torch.Size", "torch.device",
    "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor", "torch._utils._rebuild_sparse_tensor", "torch._tensor._rebuild_from_type_v2",
    "torch.nn.parameter.Parameter", "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.ndarray", "numpy.dtype",
    *(f"{module}.{name}" for module in ("builtins", "__builtin__")
      for name in ("set", "frozenset", "slice", "bytearray", "complex", "dict", "list", "tuple", "int", "float",
                   "bool", "str")),
})


def _is_safe_global(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    if name in SAFE_GLOBALS:
        return True
    if module == "torch" and (attr.endswith("Storage") or isinstance(getattr(torch, attr, None), torch.dtype)):
        return True
    return module == "numpy.dtypes" and attr.endswith("DType")


def _unsafe_globals(path: Path) -> list[str]:
    """Names the pickle would import, read with pickletools (which never executes anything)."""
    found, strings = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # garbage string opcodes raise escape-sequence DeprecationWarnings
        try:
            for opcode, arg, _ in pickletools.genops(_pickle_bytes(path)):
                if isinstance(arg, str) and "UNICODE" in opcode.name:
                    strings.append(arg)
                elif opcode.name == "GLOBAL":
                    found.append(arg.replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
        except Exception:  # noqa: BLE001 - a corrupt stream: judge what was read before it broke
            pass
    return list(dict.fromkeys(name for name in found if not _is_safe_global(name)))


def _pickle_bytes(path: Path) -> bytes:
    """The pickle stream: the whole file, or `*/data.pkl` inside torch's zip format."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            return archive.read(member) if member else b""
    return Path(path).read_bytes()


def _unwrap(state: object, path: Path) -> dict:
    for _ in range(3):  # checkpoints nest {"model": {"state_dict": ...}} at most a couple of levels
        if isinstance(state, dict) and not _is_tensor_dict(state):
            inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
            if inner is None:
                break
            state = inner
    if not isinstance(state, dict) or not _is_tensor_dict(state):
        raise DeployKitError(f"{path} holds no state_dict of tensors",
                             fix="save model.state_dict(), optionally under a 'state_dict' or 'model' key")
    return state


def _is_tensor_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())


def _strip_prefix(state: dict, prefix: str) -> dict:
    if all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str = "weights") -> nn.Module:
    """Strict load with an error that lists missing, unexpected and mis-shaped keys.

    BN `num_batches_tracked` counters the checkpoint lacks are not missing: see `with_bn_counters`."""
    own = model.state_dict()
    state = with_bn_counters(state, own)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise DeployKitError(_mismatch_message(source, missing, unexpected, mismatched, own, state),
                             fix="check that the checkpoint belongs to this model and --num-classes")
    _check_values(state, own, source)
    model.load_state_dict(state, strict=True)
    return model


# Trained weights and BN statistics sit many orders of magnitude below this; a tensor above it is an integer
# file read as float, a unit mix-up or a diverged run, and overflows fp16 (max 65504) long before.
ABSURD_MAGNITUDE = 1e6


def _check_values(state: dict[str, torch.Tensor], own: dict, source: str) -> None:
    """Refuse what load_state_dict would accept silently: an integer tensor cast into a float parameter
    (1e9-sized weights), and NaN or Inf values (every output NaN, blamed later on whatever ran next)."""
    cast = [f"{k} ({state[k].dtype})" for k in own if own[k].is_floating_point() and not
            state[k].is_floating_point()]
    if cast:
        raise DeployKitError(f"{source}: {len(cast)} float parameters are stored as non-float tensors: "
                             f"{_preview(cast, 3)}", fix="re-save the checkpoint with its float tensors as float "
                                                        "(model.state_dict() of the trained model)")
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise DeployKitError(f"{source}: {len(broken)} tensors hold NaN or Inf values: {_preview(broken, 3)}",
                             fix="use a checkpoint from before the training run diverged, or re-save it")


def magnitude_warnings(state: dict[str, torch.Tensor], source: str) -> list[str]:
    """A warning naming the tensors whose values are absurdly large (see ABSURD_MAGNITUDE); BN running
    variances are judged by their square root, the scale they stand for."""
    huge = []
    for key, value in state.items():
        if value.is_floating_point() and value.numel():
            peak = float(value.detach().abs().max())
            if (peak ** 0.5 if key.endswith("running_var") else peak) > ABSURD_MAGNITUDE:
                huge.append(f"{key} (max |x| {peak:.3g})")
    if not huge:
        return []
    return [f"{source}: {len(huge)} tensors hold values above {ABSURD_MAGNITUDE:g}, far beyond trained weights: "
            f"{_preview(huge, 3)}; check that this is the right file"]


def with_bn_counters(state: dict[str, torch.Tensor], own: dict) -> dict[str, torch.Tensor]:
    """`state` plus the BN `num_batches_tracked` buffers of `own` (a model's state_dict) that it lacks.

    Checkpoints saved by torch < 0.4.1 have none (akamaster's CIFAR ResNets, for one). The counter only
    matters when training with momentum=None, never in eval; torch itself fills in 0 for such files.
    """
    counters = {key: torch.tensor(0, dtype=torch.long) for key in own
                if key.endswith(".num_batches_tracked") and key not in state}
    return {**state, **counters} if counters else state


def _mismatch_message(source, missing, unexpected, mismatched, own, state) -> str:
    parts = [f"{source} do not fit the model"]
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            parts.append(f"{len(keys)} {label} keys: {_preview(keys)}")
    if mismatched:
        shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched[:3]]
        parts.append(f"{len(mismatched)} shape mismatches: {'; '.join(shapes)}")
    return "\n  ".join(parts)


def _preview(keys: list[str], n: int = 5) -> str:
    more = f" … (+{len(keys) - n})" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
