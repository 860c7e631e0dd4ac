"""What a zoo model costs once deployed, next to what its paper published; the catalog `deploykit models`
lists. The zoo builds the model, the passes give its deploy form, profile's cost model counts it: this
module is where the three meet, above all of them."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import torch
from torch import nn

from deploykit import zoo
from deploykit.passes import fold_bn, reparameterize
from deploykit.profile.cost import CostReport, count_cost, count_params
from deploykit.zoo import catalog


def deploy_model(name: str, *, device: str | torch.device = "cpu") -> nn.Module:
    """Zoo model `name` in deploy form (reparameterize, then fold_bn): what ships."""
    with torch.device(device):
        return fold_bn(reparameterize(zoo.create(name)))


def deploy_cost(name: str, input_size: int | tuple[int, int] | None = None) -> CostReport:
    """Cost of zoo model `name` in deploy form, at its entry's input size unless one is given."""
    size = zoo.get(name).input_size if input_size is None else input_size
    return count_cost(_shape_only_deploy_model(name), size)


def _shape_only_deploy_model(name: str) -> nn.Module:
    """The deploy form on the meta device: cost needs shapes only, and RepVGG-B3 then builds in ~2 s with no
    weights allocated. A model whose build reads weight values cannot run on meta; it gets real weights."""
    try:
        return deploy_model(name, device="meta")
    except (NotImplementedError, RuntimeError):
        return deploy_model(name)


def deploy_params(name: str) -> int:
    """Parameters of zoo model `name` after reparameterize + fold_bn."""
    return count_params(_shape_only_deploy_model(name))


# Published figures that count something else than we do, so a gap is expected (zoo metadata, kept beside
# the comparison until zoo entries carry such notes in their `paper` dict).
PAPER_NOTES = {
    "efficientnet_lite0": "the TF README's 407M MAdds seem to count more than conv and linear multiply-adds "
                          "(385M here, the figure independent PyTorch ports report too, e.g. "
                          "d-li14/efficientnet-lite.pytorch); BN, bias and ReLU6 add about 6.7M each",
}

# The papers' compute figures are all multiply-accumulates, whatever their tables call them: MobileNet's
# "mult-adds" (569M), RepVGG's "FLOPs" (A0 1.4G), MobileOne's "FLOPs" (S0 275M), EfficientNet-Lite's
# "MAdds" (407M, see PAPER_NOTES). So `paper["macs_m"]` compares with our MACs directly, never with 2x MACs.


@dataclass(frozen=True)
class PaperComparison:
    """A zoo model's deploy-form cost next to its published params / MACs (None where not published)."""

    name: str
    report: CostReport
    paper_params_m: float | None
    paper_macs_m: float | None
    note: str | None = None  # why a gap is expected, from PAPER_NOTES

    @property
    def params_delta_pct(self) -> float | None:
        return percent_difference(self.report.params / 1e6, self.paper_params_m)

    @property
    def macs_delta_pct(self) -> float | None:
        return percent_difference(self.report.macs / 1e6, self.paper_macs_m)


def compare_to_paper(name: str) -> PaperComparison:
    """Deploy-form cost of zoo model `name` at its own input size, beside the paper's figures."""
    paper = zoo.get(name).paper
    return PaperComparison(name, deploy_cost(name), paper.get("params_m"), paper.get("macs_m"),
                           PAPER_NOTES.get(name))


def paper_tolerance_pct(paper: float, *, floor_pct: float = 2.0) -> float:
    """How far (in %) our figure may sit from a published one: `floor_pct`, or more when the paper printed
    fewer digits. RepVGG-A0's "1.4 GFLOPs" (stored as 1400) is only known to +-0.05 G, i.e. +-3.6 %;
    trailing zeros of a stored integer are taken as rounding."""
    exponent = Decimal(repr(paper)).normalize().as_tuple().exponent
    half_unit = 10.0 ** exponent / 2
    return max(floor_pct, 100.0 * half_unit / abs(paper))


def percent_difference(ours: float, paper: float | None) -> float | None:
    """(ours - paper) / paper in percent; None when the paper gives no figure."""
    return None if paper is None else 100.0 * (ours - paper) / paper


def build_catalog() -> dict:
    """The catalog computed from the registry (builds every model on the meta device: seconds)."""
    rows = []
    for name in zoo.names():
        entry = zoo.get(name)
        rows.append({"name": name, "family": entry.family, "input": entry.input_size,
                     "num_classes": entry.num_classes, "params": deploy_params(name),
                     "paper_params_m": entry.paper.get("params_m"), "weights": catalog.weight_source(entry),
                     "layouts": [layout.name for layout in entry.layouts]})
    return {"script": "scripts/zoo_catalog.py", "models": rows}
