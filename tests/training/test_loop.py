"""The training loop: distillation loss, determinism for a seed, exact resume, refusing a foreign checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deploykit.core.errors import DeployKitError
from deploykit.core.preprocess import Preprocess
from deploykit.data.pixels import PixelSet
from deploykit.training import TrainConfig, train
from deploykit.training.distill import distillation_loss

PRE = Preprocess(input_size=16, resize=None)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def _data(n: int = 48) -> PixelSet:
    rng = np.random.default_rng(0)
    return PixelSet(rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), (np.arange(n) % 4).astype(np.int64))


CONFIG = TrainConfig(epochs=2, lr=0.05, batch_size=8)


def test_loss_without_teacher_is_label_smoothed_cross_entropy():
    logits, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1)
    assert torch.allclose(distillation_loss(logits, None, labels, temperature=4, soft_weight=0.9,
                                            label_smoothing=0.1), expected)


def test_soft_term_vanishes_when_student_matches_teacher():
    logits, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    both = distillation_loss(logits, logits.clone(), labels, temperature=4, soft_weight=0.9, label_smoothing=0)
    assert torch.allclose(both, 0.1 * F.cross_entropy(logits, labels), atol=1e-6)


def test_same_seed_same_weights_and_a_stop_resumes_exactly(tmp_path):
    full = train(_net(), _data(), PRE, CONFIG, checkpoint=tmp_path / "a.ckpt")
    again = train(_net(), _data(), PRE, CONFIG, checkpoint=tmp_path / "b.ckpt")
    assert all(torch.equal(x, y) for x, y in zip(full.model.state_dict().values(), again.model.state_dict().values()))
    part = train(_net(), _data(), PRE, CONFIG, checkpoint=tmp_path / "c.ckpt", stop_after_epochs=1)
    assert part.stopped_early and len(part.history) == 1
    rest = train(_net(), _data(), PRE, CONFIG, checkpoint=tmp_path / "c.ckpt", save_every=2)
    assert rest.resumed_from == {"epoch": 1, "step": 0} and len(rest.history) == 2
    assert all(torch.equal(x, y) for x, y in zip(full.model.state_dict().values(), rest.model.state_dict().values()))
    assert full.history[-1]["loss"] == rest.history[-1]["loss"]


def test_distillation_pulls_the_student_towards_the_teacher(tmp_path):
    torch.manual_seed(1)
    teacher = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4)).eval()
    with torch.no_grad():
        teacher[-1].weight.mul_(20)  # confident, and unlike the student's init
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(32, 3, 16, 16)).astype(np.float32))

    def gap(model):
        with torch.no_grad():
            return F.kl_div(F.log_softmax(model.eval()(x), 1), F.log_softmax(teacher(x), 1), log_target=True,
                            reduction="batchmean").item()

    student = _net()
    before = gap(student)
    config = TrainConfig(epochs=3, lr=0.05, batch_size=8, soft_weight=1.0, temperature=1.0)
    after = gap(train(student, _data(), PRE, config, checkpoint=tmp_path / "t", teacher=teacher).model)
    assert after < 0.7 * before


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    train(_net(), _data(), PRE, CONFIG, checkpoint=tmp_path / "x", stop_after_epochs=1)
    with pytest.raises(DeployKitError, match="different run"):
        train(_net(), _data(), PRE, TrainConfig(epochs=2, lr=0.01, batch_size=8), checkpoint=tmp_path / "x")


def test_config_is_validated():
    with pytest.raises(DeployKitError, match="lr"):
        TrainConfig(lr=0)
