"""A hand-made ProfileReport for report tests: two devices, float originals, an n/a batch, an int8 row."""

from __future__ import annotations

from deploykit.profile.results import (ARTIFACT, FLOAT_ORIGINAL, BatchLatency, Cost, Energy, ProfileReport,
                                       ProfileRow, Quality)

COST = Cost(850_986, 125_485_696, 1_894_522, "ONNX graph")
INPUTS = "cifar10/test (1000 of 10000 images)"


def _row(name: str, device: str, *, role: str = ARTIFACT, runtime: str = "onnxruntime", p50: tuple = (3.0, 12.0),
         top1: float = 0.83, agreement: float | None = 0.99, static: int | None = None,
         precision: str = "fp32") -> ProfileRow:
    latency = []
    for batch, ms in zip((1, 8), p50):
        if static is not None and batch != static:
            latency.append(BatchLatency(batch, note=f"n/a (static batch {static})"))
        else:
            latency.append(BatchLatency(batch, ms, ms * 1.2, ms * 1.5, ms * 1.05, 50))
    reference = None if role == FLOAT_ORIGINAL else "resnet56_cifar (float)"
    quality = Quality(1000, INPUTS, top1, 0.97, None if role == FLOAT_ORIGINAL else agreement,
                      None if role == FLOAT_ORIGINAL else 0.999, None if role == FLOAT_ORIGINAL else 30.0,
                      None if role == FLOAT_ORIGINAL else 0.05)
    return ProfileRow(name=name, role=role, device=device, runtime=runtime, runtime_version="1.0",
                      precision_used=precision, path=None if role == FLOAT_ORIGINAL else f"/a/{name}",
                      model="resnet56_cifar", reference=reference, file_size_bytes=3_400_000, cost=COST,
                      load_ms=150.0, warmup_ms=30.0, latency=latency, quality=quality,
                      energy=Energy(None, "no RAPL domains"), notes=["a note with | a pipe"])


def sample_report() -> ProfileReport:
    rows = []
    for device, runtime in (("host-cpu-ort", "onnxruntime"), ("host-cpu-openvino", "openvino")):
        rows += [
            _row("resnet56_cifar (float)", device, role=FLOAT_ORIGINAL, runtime="torch", p50=(15.0, 60.0),
                 top1=0.832),
            _row("folded/resnet56_cifar.onnx", device, runtime=runtime, p50=(3.0, 20.0), top1=0.832,
                 agreement=1.0, static=1),
            _row("int8/resnet56_cifar.int8.onnx", device, runtime=runtime, p50=(2.0, 9.0), top1=0.826,
                 agreement=0.99, precision="int8 (QDQ)", static=1),
            _row("slow-and-worse.onnx", device, runtime=runtime, p50=(5.0, 30.0), top1=0.80, agreement=0.95),
        ]
    devices = {"host-cpu-ort": {"runtime": "onnxruntime", "description": "CPU <ORT>", "threads": 2},
               "host-cpu-openvino": {"runtime": "openvino", "description": "CPU & OpenVINO", "threads": 2}}
    environment = {"cpu": "Test CPU", "logical_cores": 2, "usable_cores": 2, "os": "Linux",
                   "versions": {"python": "3.11"}, "energy_counter": "no RAPL domains"}
    settings = {"data": "cifar10/test", "limit": 1000, "inputs": INPUTS, "runs": 50, "warmup": 5, "batches": [1, 8]}
    return ProfileReport(environment, rows, devices, settings)


# Per device: 4 rows x 2 batches; the plot (batch 1) leaves out the row without a batch-1 latency: none here.
LINES_PER_DEVICE = 8
POINTS_PER_DEVICE = 4
