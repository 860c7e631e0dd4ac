"""CIFAR-10 ResNets: deploy form, paper sizes, and the released checkpoints on real lossless images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deploykit import zoo
from deploykit.core.paths import data_dir
from deploykit.zoo import resnet_cifar

NAMES = list(resnet_cifar.BLOCKS_PER_STAGE)


def _build(name: str) -> nn.Module:
    entry = zoo.MODELS.get(name)  # registered on import of the family module
    return entry.builder(num_classes=entry.num_classes).eval()


def test_option_a_shortcut_has_no_parameters():
    block = resnet_cifar.BasicBlock(16, 32, stride=2)
    out = block.shortcut(torch.ones(1, 16, 8, 8))
    assert out.shape == (1, 32, 4, 4)
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0  # zeros split over both sides
    owners = {name.split(".")[0] for name, _ in block.named_parameters()}
    assert owners == {"conv1", "bn1", "conv2", "bn2"}  # nothing for the shortcut


def test_default_weights_follow_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPLOYKIT_DATA", str(tmp_path))
    assert resnet_cifar.default_weights_path("resnet20_cifar") == tmp_path / resnet_cifar.DEFAULT_WEIGHTS[
        "resnet20_cifar"]


def _lossless_cifar(preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """The 20 lossless test images (label in the file name), scaled and normalised by `preprocess`."""
    files = sorted((data_dir() / "cifar10_lossless").glob("cifar10_*.png"))
    if len(files) != 20:
        pytest.skip(f"lossless CIFAR-10 images not found under {data_dir()} (set DEPLOYKIT_DATA)")
    mean, std = np.array(preprocess.mean, np.float32), np.array(preprocess.std, np.float32)
    pixels = [np.asarray(Image.open(f).convert("RGB"), np.float32) * preprocess.scale for f in files]
    images = torch.from_numpy(np.stack([(p - mean) / std for p in pixels])).permute(0, 3, 1, 2)
    labels = torch.tensor([int(f.stem.rsplit("_", 1)[1]) for f in files])
    return images, labels


@pytest.mark.parametrize("name", NAMES)
def test_released_checkpoint_classifies_lossless_images(name):
    if not resnet_cifar.default_weights_path(name).is_file():
        pytest.skip(f"checkpoint not found: {resnet_cifar.default_weights_path(name)} (set DEPLOYKIT_DATA)")
    images, labels = _lossless_cifar(zoo.MODELS.get(name).preprocess)
    model = resnet_cifar.load_pretrained(name)
    with torch.no_grad():
        correct = int((model(images).argmax(1) == labels).sum())
    assert correct >= 18, f"{name}: {correct}/20"  # measured 19-20/20; published top-1 91.7-93.4 %
