"""Corrupt checkpoints of every shape end in the same clear error, never an internal one."""

from __future__ import annotations

import random

import pytest

from deploykit.core.errors import DeployKitError
from deploykit.zoo.checkpoint import read_state_dict


def test_garbage_pickles_are_reported_as_corrupt(tmp_path):
    # Random bytes make torch's restricted unpickler raise UnpicklingError, IndexError, KeyError or
    # UnicodeDecodeError depending on the first opcodes (CI once saw IndexError escape as an internal error).
    rng = random.Random(0)
    path = tmp_path / "garbage.pth"
    causes = set()
    for _ in range(300):
        path.write_bytes(rng.randbytes(2048))
        with pytest.raises(DeployKitError, match="not a readable PyTorch checkpoint") as caught:
            read_state_dict(path)
        causes.add(type(caught.value.__cause__).__name__)
    assert {"IndexError", "KeyError"} <= causes, causes  # the seeded files do reach the unusual kinds


# --- values a strict load_state_dict accepts silently (issue 15, items 3 and 15) -----------------------

def _resnet20_state():
    import torch

    from deploykit import zoo

    return zoo.create("resnet20_cifar").state_dict(), torch


def test_an_integer_tensor_for_a_float_parameter_is_refused(tmp_path):
    """torch casts an I32 tensor into a float parameter (weights of 1e9) and the export PASSed."""
    from deploykit import zoo

    state, torch = _resnet20_state()
    state["linear.weight"] = (state["linear.weight"] * 1e9).to(torch.int32)
    path = tmp_path / "i32.pth"
    torch.save(state, path)
    with pytest.raises(DeployKitError) as err:
        zoo.load_weights("resnet20_cifar", zoo.create("resnet20_cifar"), path)
    assert "stored as non-float tensors: linear.weight (torch.int32)" in err.value.message
    assert "float" in err.value.fix


def test_nan_weights_are_refused_naming_the_tensor_not_a_pass(tmp_path):
    """NaN weights were blamed on "pass 'reparameterize'" with "cosine 1.000000"."""
    from deploykit.pipeline.export import ExportRequest, export

    state, torch = _resnet20_state()
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    with pytest.raises(DeployKitError) as err:
        export(ExportRequest(model="resnet20_cifar", weights=path, out_dir=tmp_path / "out"))
    assert "1 tensors hold NaN or Inf values: layer2.0.conv1.weight" in err.value.message
    assert "pass" not in err.value.message and "cosine" not in err.value.message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_absurd_magnitudes_warn_before_they_are_exported(tmp_path):
    """Weights of 1e8 export with PASS (the float model is the same garbage); the user is told."""
    from deploykit.pipeline.export import ExportRequest, export

    state, torch = _resnet20_state()
    state["linear.weight"] = state["linear.weight"] * 1e9
    path = tmp_path / "huge.pth"
    torch.save(state, path)
    outcome = export(ExportRequest(model="resnet20_cifar", weights=path, out_dir=tmp_path / "out"))
    assert any("linear.weight (max |x|" in w and "above 1e+06" in w for w in outcome.build.warnings)
    state = {k: (v * 1e30 if v.is_floating_point() and "running_var" not in k else v) for k, v in state.items()}
    torch.save(state, path)
    with pytest.raises(DeployKitError) as err:  # outputs overflow: refused, saying why, before any pass
        export(ExportRequest(model="resnet20_cifar", weights=path, out_dir=tmp_path / "out2"))
    assert "outputs on the probe are NaN or Inf" in err.value.message and "above 1e+06" in err.value.message


def test_a_pickle_calling_builtins_eval_is_named_not_called_corrupt(tmp_path):
    """The README promises the global's name; `builtins.` passed as a safe prefix, so builtins.eval (and
    torch.hub.load under `torch.`) were reported as a "corrupt pickle stream"."""
    import builtins
    import pickle

    import torch

    class Eval:
        def __reduce__(self):
            return (builtins.eval, ("1 + 1",))

    class Hub:
        def __reduce__(self):
            return (torch.hub.load, ("owner/repo", "model"))

    for cls, name in ((Eval, "eval"), (Hub, "torch.hub.load")):
        plain, zipped = tmp_path / "plain.pth", tmp_path / "zipped.pth"
        with open(plain, "wb") as f:
            pickle.dump({"state_dict": cls()}, f)
        torch.save({"state_dict": cls()}, zipped)
        for path in (plain, zipped):
            with pytest.raises(DeployKitError) as err:
                read_state_dict(path)
            assert "would run code on load" in err.value.message and name in err.value.message, path
