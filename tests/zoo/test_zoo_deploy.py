"""Every zoo model: the deploy form equals the training form (random BN statistics, fp32 tolerance)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deploykit import zoo
from deploykit.core.compare import compare_outputs
from deploykit.passes import fold_bn, reparameterize
from deploykit.passes.reparameterize import is_multibranch
from tests.conftest import randomize_bn

# The biggest models take seconds to build and fold; they are covered in the slow run. So are the CIFAR
# variants (the same blocks as mobileone_s0 / repvgg_a0 with a stride-1 stem: 4x the activations) and the
# wider members of a family whose blocks a smaller member already folds by default (s4 stays: its SE blocks).
BIG = {"repvgg_b1", "repvgg_b2", "repvgg_b3", "mobileone_s0_cifar", "repvgg_a0_cifar", "repvgg_a2", "mobileone_s3"}
ZOO = [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in zoo.names()]


def _deploy(model: nn.Module) -> nn.Module:
    return fold_bn(reparameterize(model))


@pytest.mark.parametrize("name", ZOO)
def test_deploy_form_equals_training_form(name):
    torch.manual_seed(0)
    model = randomize_bn(zoo.create(name, num_classes=10), seed=1, input_shape=(64, 3, 64, 64))
    deployed = _deploy(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in deployed.modules())
    assert not any(is_multibranch(m) for m in deployed.modules())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        result = compare_outputs(model(x).numpy(), deployed(x).numpy(), "fp32")
    assert result, f"{name}: {result.summary()}"


def test_passes_do_not_mutate_input():
    model = randomize_bn(zoo.create("mobileone_s0", num_classes=10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _deploy(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(is_multibranch(m) for m in model.modules())


def test_unknown_model_suggests_closest():
    from deploykit.core.errors import DeployKitError

    with pytest.raises(DeployKitError, match="mobileone_s1"):
        zoo.create("mobileone_s11")
