"""ExecuTorch on the CPU: PyTorch's on-device runtime, a `.pte` program whose XNNPACK partitions run the
same kernels on this machine as on a phone.

ExecuTorch's thread pool belongs to the process, not to a program, and resizing it after a program was
loaded crashed the process here (a segfault). So the pool is sized once, before the first program loads;
a later request for another size is refused with what to do, never performed.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from deploykit.core.errors import DeployKitError, import_backend
from deploykit.core.manifest import tool_versions

XNNPACK = "XnnpackBackend"
COMPUTE_NODES = ("XNNConv2d", "XNNDepthwiseConv2d", "XNNFullyConnected", "XNNConvTranspose2d", "XNNBatchMatrixMultiply")
_LOADED_IN_PROCESS: list[Path] = []  # ExecuTorch's own process-wide state, mirrored to refuse unsafe resizes


def import_runtime():
    """(ExecuTorch's Runtime class, its portable_lib bindings)."""
    portable_lib = import_backend("executorch.extension.pybindings.portable_lib", "executorch", package="executorch")
    return import_backend("executorch.runtime", "executorch", package="executorch").Runtime, portable_lib


def size_thread_pool(threads: int | None) -> int:
    """Size ExecuTorch's process-wide pool to `threads` (None: leave it); returns the size it runs with."""
    _, lib = import_runtime()
    current = lib._threadpool_get_thread_count()
    if threads is None or threads == current:
        return current
    if _LOADED_IN_PROCESS:
        raise DeployKitError(
            f"ExecuTorch's thread pool already runs {current} threads in this process ({_LOADED_IN_PROCESS[0].name} "
            f"was loaded), and {threads} were asked",
            fix="run each thread count in its own process (resizing the pool after a program is loaded crashes "
                "ExecuTorch)")
    lib._unsafe_reset_threadpool(threads)
    return lib._threadpool_get_thread_count()


class ExecuTorchModel:
    """A `.pte` program's `forward` in ExecuTorch's runtime, the thread pool sized first."""

    def __init__(self, path: Path, *, threads: int | None = 2) -> None:
        runtime_class, _ = import_runtime()
        self.path = Path(path)
        self.threads = size_thread_pool(threads)
        structure = program_structure(self.path)
        try:
            program = runtime_class.get().load_program(str(path))
            self.method = program.load_method("forward")
        except (RuntimeError, ValueError) as exc:
            raise DeployKitError(f"ExecuTorch cannot load {path}: {exc}",
                                 fix="pass a .pte file written by `deploykit export --target executorch`") from exc
        _LOADED_IN_PROCESS.append(self.path)
        self.structure = structure
        self.static_batch = int(self.method.metadata.input_tensor_meta(0).sizes()[0])
        self.version = tool_versions(("executorch",)).get("executorch", "unknown")

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        return self.method.execute([x])[0].numpy().copy()

    def precision_record(self) -> dict:
        """The program's delegates, the compute nodes inside the XNNPACK ones by the datatype of their input
        (qint8: int8 kernels), and the ops left outside: all read from the file."""
        from deploykit.runtimes.litert import summarize

        return {"runtime": f"executorch {self.version}", "threads": self.threads, **self.structure,
                "summary": f"{summarize(self.structure['xnnpack_compute_ops'])} ({_where(self.structure)})"}

    @property
    def precision_used(self) -> str:
        return self.precision_record()["summary"]


def program_structure(path: Path) -> dict:
    """The program's delegates and its operators outside them, read from the file (the XNNPACK payloads
    themselves are opaque here; their ops are counted at export, before they are serialized)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    try:
        pte = deserialize_pte_binary(Path(path).read_bytes())
    except Exception as exc:  # noqa: BLE001 - a damaged flatbuffer raises anything from struct to flatbuffers
        raise DeployKitError(f"{path} is not an ExecuTorch program: {type(exc).__name__}: {exc}",
                             fix="pass a .pte file written by `deploykit export --target executorch`") from exc
    program = getattr(pte, "program", pte)
    plan = program.execution_plan[0]
    xnn_ops: dict[str, Counter] = {}
    for delegate in plan.delegates:
        if delegate.id == XNNPACK:
            for op, dtypes in xnnpack_ops(program.backend_delegate_data[delegate.processed.index].data).items():
                xnn_ops.setdefault(op, Counter()).update(dtypes)
    return {"delegates": [d.id for d in plan.delegates], "portable_ops": sorted({o.name for o in plan.operators}),
            "xnnpack_compute_ops": {op: dict(c) for op, c in sorted(xnn_ops.items())}}


def xnnpack_ops(payload: bytes) -> dict[str, Counter]:
    """{compute node type: {datatype of its first input: count}} of one XNNPACK payload: its header, then
    an XNNGraph flatbuffer, read with ExecuTorch's own flatc and the XNNPACK schema it ships."""
    from executorch.backends.xnnpack.serialization import xnnpack_graph_serialize as xnn
    from executorch.exir._serialize._flatbuffer import _get_flatc_path

    header = xnn.XNNHeader.from_bytes(payload[:xnn.XNNHeader.EXPECTED_LENGTH])
    graph_bytes = payload[header.flatbuffer_offset:header.flatbuffer_offset + header.flatbuffer_size]
    with tempfile.TemporaryDirectory(prefix="deploykit-xnn-") as tmp:
        (Path(tmp) / "graph.bin").write_bytes(graph_bytes)
        schema = Path(xnn.__file__).with_name("schema.fbs")
        subprocess.run([_get_flatc_path(), "--json", "--strict-json", "--raw-binary", "-o", tmp, str(schema), "--",
                        str(Path(tmp) / "graph.bin")], check=True, capture_output=True)
        text = (Path(tmp) / "graph.json").read_text()
    graph = json.loads(re.sub(r"(?<![\w\"])-?(nan|inf)\b", "0", text))  # flatc writes bare nan/inf (clamp bounds)
    dtypes = [_datatype(v) for v in graph.get("xvalues", [])]
    counts: dict[str, Counter] = {}
    for node in graph.get("xnodes", []):
        kind, fields = node["xnode_union_type"], node["xnode_union"]
        if kind in COMPUTE_NODES:
            counts.setdefault(kind, Counter())[dtypes[fields["input1_id"]]] += 1
    return counts


def _datatype(value: dict) -> str:
    union = value["xvalue_union"]
    return union.get("tensor_value", union).get("datatype", "?").removeprefix("xnn_datatype_")


def _where(structure: dict) -> str:
    xnn = sum(d == XNNPACK for d in structure["delegates"])
    outside = structure["portable_ops"]
    return f"XNNPACK, {xnn} partition{'s' * (xnn != 1)}" + (f"; outside it: {', '.join(outside)}" if outside else "")
