"""The host side of the agent protocol (httpx), and the profiling `Runner` built on it.

Every request is idempotent (uploads are addressed by sha256, model ids derive from the load settings,
runs and measurements have no side effects), so the client retries connection failures and 503 busy
answers with exponential backoff, a bounded number of times; it never repeats a request that timed out.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from deploykit.agent.wire import ELAPSED_HEADER, NPY_TYPE, npy_array, npy_bytes, pack_directory
from deploykit.core.errors import DeployKitError, import_backend
from deploykit.core.fsutil import sha256_file
from deploykit.core.manifest import manifest_path
from deploykit.profile.latency import LatencyStats

if TYPE_CHECKING:
    from deploykit.core.devices import Device

RETRIES = 3  # 4 attempts: 0.5 + 1 + 2 s of backoff before a device is reported unreachable
BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
CONNECT_TIMEOUT_S = 5.0
HEALTH_TIMEOUT_S = 10.0  # /health answers from memory: a listener that does not is not an agent
REQUEST_TIMEOUT_S = 1800.0  # a measurement or an engine build on a slow device


class ModelNotLoaded(DeployKitError):
    """The agent no longer holds a model (it restarted, or unloaded it for others): load it again."""


class AgentClient:
    def __init__(self, url: str, token: str | None, *, token_env: str | None = None, device: str = "",
                 timeout_s: float = REQUEST_TIMEOUT_S, retries: int | None = None,
                 backoff_s: float | None = None, verify: bool | ssl.SSLContext = True) -> None:
        httpx = import_backend("httpx", "agent")
        self.url, self.token_env, self.device = url.rstrip("/"), token_env, device
        self.retries = RETRIES if retries is None else retries
        self.backoff_s = BACKOFF_S if backoff_s is None else backoff_s
        self.max_upload_bytes: int | None = None  # the agent's cap, once /info said it
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._httpx = httpx
        self._http = httpx.Client(base_url=self.url, headers=headers, verify=verify,
                                  timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S))

    @classmethod
    def for_device(cls, device: "Device", **kwargs) -> "AgentClient":
        """The client of `device`'s agent, with the token from the environment variable it names."""
        agent = device.agent
        token = os.environ.get(agent.token_env) if agent.token_env else None
        if agent.token_env and not token:
            raise DeployKitError(
                f"device {device.name}: its agent needs a token, and ${agent.token_env} is not set",
                fix=f"export {agent.token_env}=TOKEN (the token `deploykit agent serve` printed on the "
                    f"device, or the contents of its --token-file)")
        return cls(agent.url, token, token_env=agent.token_env, device=device.name, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- endpoints --------------------------------------------------------------------------------

    def health(self) -> dict:
        """Liveness: {"ok": true, "protocol": N}, without the token."""
        return self._request("GET", "/health", timeout=HEALTH_TIMEOUT_S).json()

    def info(self) -> dict:
        """What the device is and runs, and the agent's limits; needs the token (a 401 now rather than after
        the first upload)."""
        info = self._request("GET", "/info", timeout=HEALTH_TIMEOUT_S).json()
        self.max_upload_bytes = info.get("max_upload_bytes")
        return info

    def has(self, sha256: str) -> bool:
        return self._request("HEAD", f"/artifacts/{sha256}", ok=(200, 404)).status_code == 200

    def upload(self, sha256: str, blob: Path) -> dict:
        return self._request("PUT", f"/artifacts/{sha256}", content=lambda: open(blob, "rb")).json()

    def ensure_artifact(self, path: Path) -> str:
        """The artifact's wire sha256, uploading it unless the agent has it already."""
        with wire_form(Path(path)) as (blob, sha):
            if not self.has(sha):
                size = blob.stat().st_size
                if self.max_upload_bytes is not None and size > self.max_upload_bytes:
                    raise DeployKitError(f"{path} is {size / 2**20:.1f} MiB, more than the agent at "
                                         f"{self.url} accepts ({self.max_upload_bytes / 2**20:g} MiB)",
                                         fix="restart the agent with a larger --max-upload-mb")
                self.upload(sha, blob)
        return sha

    def load(self, sha256: str, settings: dict) -> dict:
        return self._request("POST", "/models", json={"sha256": sha256, **settings}).json()

    def run(self, model: str, batch: np.ndarray, *, repeat: int = 1) -> tuple[np.ndarray, float]:
        """The device's outputs for `batch`, and the device time (ms) of `repeat` runs."""
        body = npy_bytes(np.asarray(batch, dtype=np.float32))
        response = self._request("POST", f"/models/{model}/run", params={"repeat": repeat},
                                 content=lambda: body, headers={"Content-Type": NPY_TYPE})
        return npy_array(response.content), float(response.headers[ELAPSED_HEADER])

    def measure(self, items: list[tuple[str, list[int]]], *, runs: int, warmup: int,
                seed: int = 0) -> list[dict]:
        body = {"items": [{"model": m, "shape": list(shape)} for m, shape in items], "runs": runs,
                "warmup": warmup, "seed": seed}
        return self._request("POST", "/measure", json=body).json()["latency"]

    # --- transport --------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, ok: tuple[int, ...] = (), content: Callable | None = None,
                 **kwargs):
        httpx = self._httpx
        for attempt in range(self.retries + 1):
            body = content() if content is not None else None
            try:
                response = self._http.request(method, path, content=body, **kwargs)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                retriable = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) or \
                    not isinstance(exc, httpx.TimeoutException)
                if not retriable or attempt == self.retries:
                    raise self._transport_error(exc) from exc
                time.sleep(self._backoff(attempt))
                continue
            finally:
                if hasattr(body, "close"):
                    body.close()
            if response.status_code == 503 and attempt < self.retries:
                time.sleep(self._backoff(attempt, response.headers.get("Retry-After")))
                continue
            return response if response.status_code in ok else self._checked(response)

    def _backoff(self, attempt: int, retry_after: str | None = None) -> float:
        wait = self.backoff_s * 2 ** attempt
        if retry_after and retry_after.isdigit():
            wait = max(wait, float(retry_after))
        return min(wait, MAX_BACKOFF_S)

    def _checked(self, response):
        if response.is_success:
            return response
        error, fix = _detail(response)
        status = response.status_code
        if status == 401:
            where = f"${self.token_env}" if self.token_env else "the device's `agent: token_env:` variable"
            raise DeployKitError(f"the agent at {self.url} refused the token ({error})",
                                 fix=f"set {where} to the token `deploykit agent serve` printed on the "
                                     f"device (or the contents of its --token-file)")
        if status == 404 and "is not loaded" in error:
            raise ModelNotLoaded(f"the agent at {self.url}: {error}")
        raise DeployKitError(f"the agent at {self.url} answered {status}: {error}",
                             fix=fix or "see the agent's log on the device")

    def _transport_error(self, exc: Exception) -> DeployKitError:
        httpx = self._httpx
        device = f"device {self.device}'s agent" if self.device else "the agent"
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return DeployKitError(
                f"{device} at {self.url} did not answer in time ({type(exc).__name__})",
                fix=f"check that `deploykit agent serve` is what listens at {self.url}, and its log on the "
                    f"device; a slow device may need a longer --request-timeout")
        token = f", and that ${self.token_env} holds the agent's token" if self.token_env else ""
        return DeployKitError(
            f"cannot reach {device} at {self.url} after {self.retries + 1} attempts: "
            f"{type(exc).__name__}: {exc}",
            fix=f"start `deploykit agent serve` on the device (with --host and --token-file to accept other "
                f"machines), check that {self.url} is reachable from here{token}")


def _detail(response) -> tuple[str, str | None]:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:200] or response.reason_phrase, None
    if isinstance(detail, dict):
        return str(detail.get("error")), detail.get("fix")
    return str(detail), None


@contextlib.contextmanager
def wire_form(path: Path) -> Iterator[tuple[Path, str]]:
    """(file to send, its sha256): the file itself, or a deterministic tar of a directory artifact. A
    TensorRT bundle travels without its engine and timing cache: engines are built where they run."""
    if path.is_file():
        yield path, sha256_file(path)
        return
    if not path.is_dir():
        raise DeployKitError(f"artifact not found: {path}", fix="pass the path of an exported artifact")
    from deploykit.core.tensorrt_plan import CACHE_FILE, ENGINE_FILE, PLAN_FILE

    exclude = (ENGINE_FILE, CACHE_FILE) if (path / PLAN_FILE).is_file() else ()
    with tempfile.TemporaryDirectory(prefix="deploykit-wire-") as tmp:
        blob = Path(tmp) / "artifact.tar"
        with open(blob, "wb") as f:
            pack_directory(path, f, manifest=manifest_path(path), exclude=exclude)
        yield blob, sha256_file(blob)


# --- the profiling runner -------------------------------------------------------------------------

class RemoteRunnable:
    """An artifact loaded on the device: `run` sends a batch and returns the device's outputs."""

    model = None  # no local backend object behind it

    def __init__(self, client: AgentClient, sha256: str, settings: dict) -> None:
        self.client, self.sha256, self.settings = client, sha256, settings
        self.info = self.load()

    def load(self) -> dict:
        info = self.client.load(self.sha256, self.settings)
        self.model_id, self.version = info["model"], info["version"]
        self.static_batch, self.precision_used = info["static_batch"], info["precision_used"]
        return info

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.run_timed(batch, 1)[0]

    def run_timed(self, batch: np.ndarray, repeat: int) -> tuple[np.ndarray, float]:
        try:
            return self.client.run(self.model_id, batch, repeat=repeat)
        except ModelNotLoaded:
            self.load()
            return self.client.run(self.model_id, batch, repeat=repeat)


class AgentRunner:
    """The profiling `Runner` (pipeline layer, runners.py) of a device reached through its agent:
    artifacts are uploaded (unless stored already), loaded, run and timed on the device."""

    def __init__(self, client: AgentClient, info: dict) -> None:
        self.client, self.info = client, info

    @classmethod
    def connect(cls, device: "Device") -> "AgentRunner":
        client = AgentClient.for_device(device)
        client.health()  # is it an agent at all (a listener that does not answer is not)
        return cls(client, client.info())

    def load(self, path: Path, device: "Device") -> tuple[RemoteRunnable, float]:
        sha = self.client.ensure_artifact(Path(path))
        settings = {"runtime": device.runtime, "precision": device.precision,
                    "compute_units": device.compute_units, "threads": device.threads}
        runnable = RemoteRunnable(self.client, sha, settings)
        return runnable, runnable.info["load_ms"] / 1e3

    def warm_up(self, runnable: RemoteRunnable, probe: np.ndarray, times: int) -> tuple[float, np.ndarray]:
        out, elapsed_ms = runnable.run_timed(probe, times)
        return elapsed_ms / 1e3, out

    def latency(self, calls: dict[str, tuple[RemoteRunnable, np.ndarray]], *, runs: int, warmup: int,
                progress: Callable[[int, int], None] | None = None) -> dict[str, LatencyStats]:
        """Measured on the device, interleaved like local candidates; the inputs are seeded normal batches
        of the same shapes (generated there: only the shapes travel)."""
        names = list(calls)
        items = [(calls[n][0].model_id, list(calls[n][1].shape)) for n in names]
        try:
            stats = self.client.measure(items, runs=runs, warmup=warmup)
        except ModelNotLoaded:
            for name in names:
                calls[name][0].load()
            items = [(calls[n][0].model_id, shape) for n, (_, shape) in zip(names, items, strict=True)]
            stats = self.client.measure(items, runs=runs, warmup=warmup)
        if progress is not None:
            progress(runs, runs)
        return {name: LatencyStats(**s) for name, s in zip(names, stats, strict=True)}

    def environment(self) -> dict:
        return {"agent": {"url": self.client.url, **self.info}}

