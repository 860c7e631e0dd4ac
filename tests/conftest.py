"""Shared fixtures: real-data path, BN statistics that make folding bugs visible."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

DATA_DIR = Path(os.environ.get("DEPLOYKIT_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def randomize_bn(model: nn.Module, seed: int = 0, input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """Random BN statistics and affine parameters (init values 0, 1, 1, 0 hide folding bugs).

    With `input_shape` the network is conditioned like a trained one: affine gammas inside an n-branch
    block are scaled by 1/sqrt(n) so the branch sum keeps unit scale, statistics are measured on a random
    batch (64 images: fewer leave stage-4 statistics noisy and the net ill-conditioned) and then perturbed.
    Blind statistics on a deep random-weight net let activations grow by orders
    of magnitude, until the fp32 model no longer agrees with its own float64 evaluation to 1e-4
    (measured: 4.8e-4 for mobileone_s4), and then no fp32 tolerance can judge folding.
    """
    gen = torch.Generator().manual_seed(seed)
    branch_scale = _branch_scales(model) if input_shape is not None else {}
    with torch.no_grad():
        for m in _bns(model):
            _randomize_affine(m, gen, branch_scale.get(id(m), 1.0))
    if input_shape is not None:
        _measure_bn_statistics(model, torch.randn(*input_shape, generator=gen))
    with torch.no_grad():
        for m in _bns(model):
            _perturb_statistics(m, gen, measured=input_shape is not None)
    return model.eval()


def _bns(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _branch_scales(model: nn.Module) -> dict[int, float]:
    scales = {}
    for block in model.modules():
        if callable(getattr(block, "reparam_branches", None)):
            branches = block.reparam_branches()
            scales.update({id(bn): len(branches) ** -0.5 for b in branches for bn in _bns(b)})
    return scales


def _randomize_affine(bn: nn.Module, gen: torch.Generator, scale: float) -> None:
    if bn.affine:
        n = bn.num_features
        bn.weight.copy_((torch.rand(n, generator=gen) * 0.5 + 0.75) * scale)
        bn.bias.copy_(torch.randn(n, generator=gen) * 0.1)


def _perturb_statistics(bn: nn.Module, gen: torch.Generator, *, measured: bool) -> None:
    n = bn.num_features
    if measured:
        bn.running_mean.add_(torch.randn(n, generator=gen) * 0.1 * bn.running_var.sqrt())
        bn.running_var.mul_(torch.rand(n, generator=gen) * 0.2 + 0.9)
    else:
        bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
        bn.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.5)


@torch.no_grad()
def _measure_bn_statistics(model: nn.Module, batch: torch.Tensor) -> None:
    """Running statistics = this batch's statistics (momentum None: a cumulative average of one batch)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    model(batch)
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


@pytest.fixture(scope="session", autouse=True)
def default_threads():
    """The thread count deploykit's runs default to, for the session, and the process's own back after it:
    set by a fixture, not as a side effect of importing this file."""
    from deploykit.core.devices import DEFAULT_THREADS

    before = torch.get_num_threads()
    torch.set_num_threads(DEFAULT_THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"real data not found at {DATA_DIR} (set DEPLOYKIT_DATA)")
    return DATA_DIR
