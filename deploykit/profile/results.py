"""What `deploykit profile` measured, as data: one ProfileRow per artifact x device (the float original
is a row too, run in PyTorch), per-batch latency inside it. Reports flatten rows to one line per batch.

Every figure that could not be measured is None with a note saying why ("n/a (static batch 1)"); nothing
is estimated. `to_dict` / `from_dict` round-trip through JSON, so a saved report can be rendered again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

FLOAT_ORIGINAL = "float-original"
ARTIFACT = "artifact"


@dataclass(frozen=True)
class BatchLatency:
    """Latency at one batch size; the timings are None when the artifact cannot run this batch."""

    batch: int
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    runs: int = 0
    note: str | None = None  # e.g. "n/a (static batch 1)"
    spread: float | None = None  # between the medians of the timing rounds (see profile.latency)

    @property
    def throughput(self) -> float | None:
        """Images per second at the median latency."""
        return None if self.p50_ms is None else 1e3 * self.batch / self.p50_ms


@dataclass(frozen=True)
class Quality:
    """Accuracy on labelled data (None without labels) and agreement with the float original's outputs on
    the same inputs (None for the float original itself, or when there is none to compare with)."""

    n: int
    inputs: str  # what the figures were measured on: "cifar10/test (1000 of 10000)", "random probe ..."
    top1: float | None = None
    top5: float | None = None
    agreement: float | None = None  # share of inputs whose top-1 class equals the float original's
    cosine: float | None = None
    sqnr_db: float | None = None
    max_rel_err: float | None = None


@dataclass(frozen=True)
class Cost:
    """Static cost at batch 1 (see `deploykit.profile.count_cost` for what counts), and where it came from."""

    params: int | None = None
    macs: int | None = None
    memory_access: int | None = None
    source: str = ""


@dataclass(frozen=True)
class Energy:
    joules_per_image: float | None = None
    source: str = ""  # the counter, or why there is none


@dataclass
class ProfileRow:
    name: str  # unique within a report; the label of the point in plots
    role: str  # FLOAT_ORIGINAL or ARTIFACT
    device: str
    runtime: str
    runtime_version: str
    precision_used: str
    path: str | None = None  # None for the float original (built from the zoo and its weights)
    model: str | None = None
    reference: str | None = None  # the name of the float-original row this one is compared with
    file_size_bytes: int | None = None
    cost: Cost = field(default_factory=Cost)
    load_ms: float | None = None
    warmup_ms: float | None = None
    latency: list[BatchLatency] = field(default_factory=list)
    quality: Quality | None = None
    energy: Energy = field(default_factory=Energy)
    notes: list[str] = field(default_factory=list)

    def latency_at(self, batch: int) -> BatchLatency | None:
        return next((lat for lat in self.latency if lat.batch == batch), None)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["latency"] = [{**asdict(lat), "throughput": lat.throughput} for lat in self.latency]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ProfileRow":
        data = dict(data)
        names = {f.name for f in fields(BatchLatency)}
        data["latency"] = [BatchLatency(**{k: v for k, v in lat.items() if k in names}) for lat in data["latency"]]
        data["quality"] = Quality(**data["quality"]) if data.get("quality") else None
        data["cost"] = Cost(**data.get("cost", {}))
        data["energy"] = Energy(**data.get("energy", {}))
        return cls(**data)


@dataclass
class ProfileReport:
    """Rows of one or more devices, with the machine they ran on and how they were measured."""

    environment: dict
    rows: list[ProfileRow]
    devices: dict[str, dict] = field(default_factory=dict)  # name -> the device profile as loaded
    settings: dict = field(default_factory=dict)  # data, limit, runs, warmup, batches

    def to_dict(self) -> dict:
        return {"environment": self.environment, "devices": self.devices, "settings": self.settings,
                "rows": [row.to_dict() for row in self.rows]}

    @classmethod
    def from_dict(cls, data: dict) -> "ProfileReport":
        return cls(data["environment"], [ProfileRow.from_dict(r) for r in data["rows"]],
                   data.get("devices", {}), data.get("settings", {}))

    def device_names(self) -> list[str]:
        return list(dict.fromkeys(row.device for row in self.rows))

    def batches(self) -> list[int]:
        return sorted({lat.batch for row in self.rows for lat in row.latency})


def merge_reports(reports: list[ProfileReport]) -> ProfileReport:
    """One report of several devices' reports (the environment and settings of the first)."""
    if not reports:
        raise ValueError("no reports to merge")
    devices = {name: spec for report in reports for name, spec in report.devices.items()}
    return ProfileReport(reports[0].environment, [row for r in reports for row in r.rows], devices,
                         reports[0].settings)
