"""Resolving what to evaluate: static-batch ONNX, manifests, outside-ONNX options, zoo weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deploykit.core.errors import DeployKitError
from deploykit.core.manifest import Manifest, manifest_path
from deploykit.core.preprocess import Preprocess
from deploykit.data.datasets import open_dataset
from deploykit.data.loader import batches
from deploykit.export.onnx import export_onnx
from deploykit.pipeline.evaluate import (EvalRequest, PreprocessOptions, onnx_evaluable, options_preprocess,
                                         resolve_model, run_eval)
from deploykit.runtimes import fixed_batch

MNIST_PREPROCESS = Preprocess(input_size=28, resize=None, channels="L", mean=(0.0,), std=(1.0,), scale=1.0)


def test_fixed_batch_pads_and_drops():
    calls = []

    def run(chunk: np.ndarray) -> np.ndarray:
        calls.append(len(chunk))
        return chunk.reshape(len(chunk), -1)[:, :2] * 2

    batch = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    out = fixed_batch(run, 4)(batch)
    assert calls == [4, 4, 4]
    np.testing.assert_array_equal(out, batch[:, :2] * 2)


def test_options_fill_in_from_the_graph():
    recipe = options_preprocess(PreprocessOptions(), [1, 1, 28, 28])
    assert (recipe.input_size, recipe.channels, recipe.resize, recipe.mean, recipe.std) == (28, "L", None, (0.0,), (1.0,))
    assert recipe.scale == pytest.approx(1 / 255)
    rgb = options_preprocess(PreprocessOptions(size=32, mean=(0.5,), std=(0.2, 0.3, 0.4)), ["N", 3, "H", "W"])
    assert rgb.channels == "RGB" and rgb.mean == (0.5,) * 3 and rgb.std == (0.2, 0.3, 0.4)


@pytest.mark.parametrize("options, shape, message", [
    (PreprocessOptions(), ["N", 3, "H", "W"], "pass --size"),
    (PreprocessOptions(grayscale=True), [1, 3, 32, 32], "--grayscale gives 1 channel"),
    (PreprocessOptions(size=8, mean=(0.1, 0.2)), [1, 3, 8, 8], "--mean has 2 values"),
])
def test_bad_options(options, shape, message):
    with pytest.raises(DeployKitError, match=message):
        options_preprocess(options, shape)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 6)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for label in range(3):
        (root / f"c{label}").mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(root / f"c{label}" / f"{i}.png")
    return root


def test_static_batch_onnx_matches_torch(tmp_path, image_folder):
    torch.manual_seed(0)
    model = TinyNet().eval()
    path = export_onnx(model, torch.randn(4, 3, 8, 8), tmp_path / "tiny.onnx", simplify=False).path
    evaluable = onnx_evaluable(path, PreprocessOptions(resize=8, mean=(0.5,), std=(0.25,)), threads=1)
    assert "static batch 4" in evaluable.description
    (images, _), = batches(open_dataset(image_folder), evaluable.preprocess, 32)
    assert images.shape == (12, 3, 8, 8)
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(evaluable.predict(images), expected, rtol=1e-4, atol=1e-5)


def mnist_with_manifest(data_dir: Path, tmp_path: Path) -> Path:
    model = tmp_path / "mnist-8.onnx"
    shutil.copy(data_dir / "mnist" / "mnist-8.onnx", model)
    Manifest(model="mnist-8", target="onnx", artifact=model.name, weights_sha256="outside",
             preprocess=MNIST_PREPROCESS.to_dict(), input_shape=[1, 1, 28, 28]).finalize(model).write(
        manifest_path(model))
    return model


def test_manifest_preprocessing_is_used(data_dir, tmp_path):
    model = mnist_with_manifest(data_dir, tmp_path)
    outcome = run_eval(EvalRequest(target=str(model), data=data_dir / "mnist", limit=300))
    assert outcome.preprocess == MNIST_PREPROCESS and "mnist-8.onnx.manifest.json" in outcome.description
    assert outcome.result.top1 >= 0.97
    with pytest.raises(DeployKitError, match="--size conflicts with mnist-8.onnx.manifest.json"):
        resolve_model(EvalRequest(target=str(model), data=data_dir, options=PreprocessOptions(size=28)))


def test_options_do_not_apply_to_zoo_models(tmp_path):
    with pytest.raises(DeployKitError, match="--grayscale applies only to an ONNX file"):
        resolve_model(EvalRequest(target="resnet20_cifar", data=tmp_path, options=PreprocessOptions(grayscale=True)))


def test_zoo_model_with_default_weights(data_dir):
    outcome = run_eval(EvalRequest(target="resnet20_cifar", data=data_dir / "cifar10" / "test", limit=200))
    assert "default weights" in outcome.description and not outcome.warnings
    assert outcome.result.top1 > 0.7 and outcome.result.n == 200


def test_zoo_model_without_weights_warns(image_folder):
    outcome = run_eval(EvalRequest(target="mobilenet_v1_025", data=image_folder))
    assert outcome.warnings and "random init" in outcome.warnings[0]
    assert outcome.result.n == 12


def test_missing_onnx_file(tmp_path):
    with pytest.raises(DeployKitError, match="artifact not found"):
        resolve_model(EvalRequest(target=str(tmp_path / "nope.onnx"), data=tmp_path))
