"""The fp16 range scan as both fp16 targets (Core ML, TensorRT) run it: over --calib images when
given, else over the probe, on the deploy model."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from deploykit.export.fp16_range import RangeScan, scan_ranges
from deploykit.pipeline.targets.base import ExportContext

SCAN_IMAGES = 64  # a screen with a 2x margin (export.fp16_range), not a statistic: 64 images suffice


def scan_fp16_range(ctx: ExportContext, calib: Path | None) -> RangeScan:
    if calib is None:
        return scan_ranges(ctx.deployed, [ctx.probe], source="probe (randn seed 0)")
    return scan_ranges(ctx.deployed, calibration_batches(ctx, calib, SCAN_IMAGES),
                       source=f"up to {SCAN_IMAGES} images from {calib}")


def layers_to_keep(scan: RangeScan) -> dict[str, bool]:
    """Flagged layer -> whether its output (not only its input) is large: what the converters take."""
    return {layer: scan.peaks[layer][1] > scan.threshold for layer in scan.flagged()}


def calibration_batches(ctx: ExportContext, path: Path, limit: int) -> Iterator[torch.Tensor]:
    """Preprocessed images from `path` in the export's batch size (the graph's shape is static)."""
    from deploykit.data import batches, open_dataset

    batch = ctx.probe.shape[0]
    for images, _ in batches(open_dataset(Path(path)), ctx.preprocess, batch, limit=limit):
        if len(images) == batch:
            yield torch.from_numpy(images)
