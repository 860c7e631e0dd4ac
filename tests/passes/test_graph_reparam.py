"""The generic reparameterize pass on models deploykit has never seen: what it folds (checked against the
unfolded model on the same input), what it leaves and why, and the user-model export path."""

from __future__ import annotations

import operator
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from deploykit import zoo
from deploykit.core.compare import compare_outputs
from deploykit.core.errors import DeployKitError
from deploykit.core.manifest import Manifest, manifest_path
from deploykit.passes import PASSES, ReparameterizeConfig, reparameterize, reparameterize_with_report
from deploykit.passes.runner import run_passes
from deploykit.pipeline.export import ExportRequest, export
from tests.conftest import randomize_bn
from tests.passes import graph_models as gmod

REPO = Path(__file__).resolve().parents[2]
GENERIC = ReparameterizeConfig(use_protocol=False)
USER_MODEL = "tests.passes.graph_models:rep_net"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/passes/conftest.py


def _x(channels: int = 8, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _same(ref: nn.Module, new: nn.Module, x: torch.Tensor, tol: float = 1e-5) -> float:
    with torch.no_grad():
        result = compare_outputs(ref(x).numpy(), new(x).numpy(), "fp32")
    assert result.max_rel_err <= tol, result.summary()
    return result.max_rel_err


def _count(model: nn.Module, cls: type) -> int:
    return sum(isinstance(m, cls) for m in model.modules())


def _fold(model: nn.Module, x: torch.Tensor):
    model = randomize_bn(model, seed=3).eval()
    folded, report = reparameterize_with_report(model, x[:1], config=GENERIC)
    _same(model, folded, x)
    return folded, report


# --- blocks written the user's way fold completely -------------------------------------------------------

@pytest.mark.parametrize("block,kinds", [
    (gmod.RepLike(8), ("conv3x3+bn", "bn", "conv1x1+bn")),
    (gmod.ACBlock(8, 8), ("conv3x3+bn", "conv1x3+bn", "conv3x1+bn")),
    (gmod.ACBlock(8, 6, stride=2), ("conv3x3+bn", "conv1x3+bn", "conv3x1+bn")),
    (gmod.DBBLite(8), ("conv3x3+bn", "conv1x1", "scale", "identity")),
])
def test_user_block_folds_to_one_conv(block, kinds):
    folded, report = _fold(block, _x())
    assert _count(folded, nn.Conv2d) == 1 and _count(folded, nn.BatchNorm2d) == 0
    assert [b.branches for b in report.blocks] == [kinds] and not report.left
    assert report.blocks[0].max_rel_err < 1e-5 and report.blocks[0].via == "graph"


def test_cross_kernels_alone_fuse_to_their_union():
    """1x3 + 3x1 with no 3x3 branch: the fused kernel is 3x3 (both centred in it)."""
    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.h, self.v = gmod._conv(4, 4, (1, 3)), gmod._conv(4, 4, (3, 1), bias=True)

        def forward(self, x):
            return self.h(x) + self.v(x)

    folded, report = _fold(Cross(), _x(4))
    assert report.blocks[0].kernel == (3, 3) and _count(folded, nn.Conv2d) == 1


@pytest.mark.parametrize("combine", [
    lambda a, b, c, x: a + b + c + x,
    lambda a, b, c, x: a + (b + (c + x)),
    lambda a, b, c, x: sum([a, b, c, x]),
    lambda a, b, c, x: torch.add(a, b).add(torch.add(c, x)),
    lambda a, b, c, x: operator.add(x, operator.add(c, a + b)),
])
def test_every_way_of_writing_a_sum(combine):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(gmod._conv(4, 4, 3), nn.BatchNorm2d(4))
            self.b, self.c = gmod._conv(4, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            return combine(self.a(x), self.b(x), self.c(x), x)

    folded, report = _fold(Block(), _x(4))
    assert len(report.blocks) == 1 and len(report.blocks[0].branches) == 4
    assert _count(folded, nn.Conv2d) == 1


def test_chained_blocks_their_activations_and_a_bn_after_the_sum():
    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.one, self.two, self.three = gmod.RepLike(4), gmod.ACBlock(4, 4), gmod.ACBlock(4, 4)
            self.after = nn.BatchNorm2d(4)

        def forward(self, x):
            # two's sum feeds three's branches directly: three's input is a node folded a moment before
            return self.after(self.three(self.two(self.one(x))))

    folded, report = _fold(Chain(), _x(4))
    assert [b.where for b in report.blocks] == ["one", "two", "three"]
    assert report.conv_bn_folded == 1  # the BN after the last sum joins that sum's conv
    assert _count(folded, nn.Conv2d) == 3 and _count(folded, nn.BatchNorm2d) == 0


def test_a_whole_user_net_with_stem_head_and_five_blocks():
    model = gmod.rep_net()
    folded, report = reparameterize_with_report(model, _x(3, 32)[:1], config=GENERIC)
    _same(model, folded, _x(3, 32))
    assert len(report.blocks) == 5 and report.conv_bn_folded == 1 and not report.left
    assert _count(folded, nn.Conv2d) == 6 and _count(folded, nn.BatchNorm2d) == 0


def test_linear_bn1d_pairs_fold_with_a_probe_from_the_first_linear():
    model = randomize_bn(nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))).eval()
    folded, report = reparameterize_with_report(model)  # default probe: (1, 6)
    assert report.conv_bn_folded == 1 and _count(folded, nn.BatchNorm1d) == 0
    _same(model, folded, torch.randn(4, 6))


# --- what is not foldable stays, with the reason ---------------------------------------------------------

def test_resnet_basic_block_keeps_its_residual_but_folds_its_conv_bn_pairs():
    folded, report = _fold(gmod.BasicBlock(4), _x(4))
    assert not report.blocks and report.conv_bn_folded == 2
    assert _count(folded, nn.Conv2d) == 2 and _count(folded, nn.BatchNorm2d) == 0
    [left] = report.left
    assert left.op == "add" and "non-linearity (relu)" in left.reason


def test_osa_concat_is_left_and_reported():
    folded, report = _fold(gmod.OSA(4), _x(4))
    assert report.conv_bn_folded == 4 and _count(folded, nn.Conv2d) == 4
    assert [(x.op, x.reason) for x in report.left] == [
        ("cat", "concatenation: branches are joined, not summed")]


def test_branches_with_different_strides_are_left():
    class Strides(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(4, 4, 3, stride=2, padding=1)
            self.b = nn.Conv2d(4, 4, 1, stride=3, padding=1)

        def forward(self, x):
            return self.a(x) + self.b(x)  # 8x8 -> 4x4 both ways, on different pixels

    folded, report = _fold(Strides(), _x(4, 8))
    assert not report.blocks and "stride" in report.left[0].reason and _count(folded, nn.Conv2d) == 2


def test_mobileone_s4_folds_around_its_squeeze_excitation():
    torch.manual_seed(0)
    model = randomize_bn(zoo.create("mobileone_s4", num_classes=10), seed=1)
    x = _x(3, 16)
    folded, report = reparameterize_with_report(model, x[:1], config=GENERIC)
    assert report.max_rel_err < 1e-5  # each fold, checked on its own input
    # The whole net only to 1e-3: blind BN statistics leave a 40-layer random net ill-conditioned in fp32
    # (randomize_bn explains); the protocol comparison below checks outputs against the same math.
    _same(model, folded, x, tol=1e-3)
    se_convs = 2 * sum(1 for m in model.modules() if type(m).__name__ == "SEBlock")
    assert _count(folded, nn.BatchNorm2d) == 0 and _count(folded, nn.Conv2d) == 43 + se_convs
    assert len(report.blocks) + report.conv_bn_folded == 43  # single-branch blocks are plain conv-BN pairs
    assert {(x.op, x.reason) for x in report.left} == {
        ("mul", "product of two computed tensors (e.g. a squeeze-excitation gate)")}
    assert len(report.left) == se_convs // 2


def test_probe_check_rejects_a_wrong_fold(monkeypatch):
    from deploykit.passes import graph_reparam

    right = graph_reparam.merge_branches

    def wrong(branches, factors=None):
        conv = right(branches, factors)
        with torch.no_grad():
            conv.bias.add_(1.0)
        return conv

    model = randomize_bn(gmod.RepLike(4)).eval()
    monkeypatch.setattr(graph_reparam, "merge_branches", wrong)
    folded, report = reparameterize_with_report(model, _x(4)[:1], config=GENERIC)
    assert not report.blocks and report.left[0].reason.startswith("probe check failed")
    _same(model, folded, _x(4))


# --- tracing: what fx cannot trace is looked into separately ---------------------------------------------

def test_untraceable_submodule_is_folded_inside():
    model = nn.Sequential(gmod.RepLike(4), gmod.Gated(4), nn.ReLU())
    _, report = _fold(model, _x(4))
    assert len(report.blocks) == 2 and report.traced_separately == ["1"]
    assert [b.where for b in report.blocks] == ["0", "1.block"]


def test_untraceable_model_is_folded_child_by_child():
    folded, report = _fold(gmod.Gated(4), _x(4))
    assert len(report.blocks) == 1 and report.traced_separately == ["(model)"]
    assert isinstance(folded, gmod.Gated)  # the user's class is kept


# --- contract: eval mode, input untouched, probe shape, protocol agreement -------------------------------

def test_training_mode_is_refused_and_input_untouched():
    model = randomize_bn(gmod.RepLike(4))
    with pytest.raises(DeployKitError, match="eval mode"):
        reparameterize(model.train())
    before = {k: v.clone() for k, v in model.eval().state_dict().items()}
    reparameterize(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model, gmod.RepLike) and _count(model, nn.BatchNorm2d) == 3


def test_default_probe_and_a_probe_that_does_not_fit():
    model = randomize_bn(gmod.RepLike(4)).eval()
    assert len(reparameterize_with_report(model)[1].blocks) == 1  # (1, 4, 64, 64) from the first conv
    with pytest.raises(DeployKitError, match="probe input of shape"):
        reparameterize(model, example_input=torch.randn(1, 3, 8, 8))


SMALL = ["mobileone_s0", "repvgg_a0"]
BIG = ["mobileone_s1", "mobileone_s2", "mobileone_s3", "mobileone_s4", "repvgg_a1", "repvgg_a2", "repvgg_b0",
       "repvgg_b1", "repvgg_b2", "repvgg_b3"]


@pytest.mark.parametrize("name", SMALL + [pytest.param(n, marks=pytest.mark.slow) for n in BIG])
def test_generic_pass_agrees_with_the_protocol(name):
    torch.manual_seed(0)
    model = randomize_bn(zoo.create(name, num_classes=10), seed=1, input_shape=(4, 3, 32, 32))
    x = _x(3, 32)
    protocol, by_protocol = reparameterize_with_report(model, x[:1])
    generic, by_graph = reparameterize_with_report(model, x[:1], config=GENERIC)
    assert {b.via for b in by_protocol.blocks} == {"protocol"}
    assert {b.via for b in by_graph.blocks} == {"graph"}
    assert _count(generic, nn.Conv2d) == _count(protocol, nn.Conv2d)
    assert _count(generic, nn.BatchNorm2d) == _count(protocol, nn.BatchNorm2d) == 0
    _same(protocol, generic, x)
    # Against the training form, the generic pass is as close as the protocol is. (Not always 1e-4: these
    # BN statistics, measured on 4 small images, leave the deep nets ill-conditioned in fp32.)
    with torch.no_grad():
        reference = model(x).numpy()
        errors = [compare_outputs(reference, m(x).numpy(), "fp32").max_rel_err for m in (protocol, generic)]
    assert errors[1] <= 2 * errors[0] + 1e-6, errors


# --- the pipeline: the report reaches the manifest; user models export --------------------------------

def test_runner_records_the_report():
    model = randomize_bn(gmod.RepLike(4)).eval()
    outcome = run_passes(model, [("reparameterize", None)], _x(4))
    [record] = outcome.records
    assert record.report["blocks_folded"] == 1 and record.report["probe"]["passed"]
    assert PASSES.get("reparameterize").takes_probe


def test_export_a_user_model_from_its_factory(tmp_path):
    outcome = export(ExportRequest(model_from=USER_MODEL, input_size=32, out_dir=tmp_path))
    assert outcome.artifact.name == "rep_net.onnx" and outcome.build.parity.passed
    ops = outcome.build.details["op_counts"]
    assert ops["Conv"] == 6 and ops.get("BatchNormalization", 0) == 0 and ops.get("Add", 0) == 0
    manifest = Manifest.read(manifest_path(outcome.artifact))
    report = manifest.passes[0].report
    assert manifest.model == "rep_net" and report["blocks_folded"] == 5 and report["left"] == []


def test_cli_exports_a_user_model_and_prints_the_report(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DEPLOYKIT_DEBUG"}
    env["PYTHONPATH"] = str(REPO)
    args = ["export", "--model-from", USER_MODEL, "--input-size", "32", "--out", str(tmp_path), "-v"]
    result = subprocess.run([sys.executable, "-m", "deploykit", *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "rep_net.onnx").is_file()
    assert "folded blocks" in result.stdout and "conv1x3+bn" in result.stdout


@pytest.mark.parametrize("spec,message", [
    ("tests.passes.graph_models", "not of the form"),
    ("tests.passes.no_such_module:make", "cannot import"),
    ("tests.passes.graph_models:no_such_factory", "has no attribute"),
    ("tests.passes.graph_models:not_a_model", "returned a int, not a torch.nn.Module"),
    ("tests.passes.graph_models:broken_factory", "factory raised RuntimeError: no weights here"),
])
def test_bad_model_from_is_one_clear_error(spec, message, tmp_path):
    with pytest.raises(DeployKitError, match=message):
        export(ExportRequest(model_from=spec, out_dir=tmp_path))
    assert not list(tmp_path.glob("*.onnx"))


def test_model_and_model_from_are_exclusive(tmp_path):
    with pytest.raises(DeployKitError, match="exactly one"):
        export(ExportRequest(out_dir=tmp_path))
    with pytest.raises(DeployKitError, match="exactly one"):
        export(ExportRequest(model="repvgg_a0", model_from=USER_MODEL, out_dir=tmp_path))
