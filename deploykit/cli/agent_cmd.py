"""`deploykit agent serve`: the agent a user starts on their device, so `deploykit profile --device D`
measures there (see `deploykit.agent` for the protocol)."""

from __future__ import annotations

import ipaddress
import secrets
import stat
from pathlib import Path
from typing import Optional

import typer

from deploykit.agent import DEFAULT_PORT
from deploykit.cli.app import app, console, err_console, handled
from deploykit.core.errors import DeployKitError, missing_extra

agent_app = typer.Typer(help="The on-device agent: run it on the device, profile through it from the host.",
                        no_args_is_help=True)
app.add_typer(agent_app, name="agent")
DEFAULT_STORE = Path.home() / ".deploykit" / "agent-store"


@agent_app.command("serve")
@handled
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on; anything but loopback needs "
                                                         "--token-file (and TLS is recommended)"),
    port: int = typer.Option(DEFAULT_PORT, "--port"),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="file holding the token clients "
                                              "must send; without it a token is generated and printed once"),
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="where received artifacts are kept (by "
                                                              "sha256)"),
    max_upload_mb: float = typer.Option(1024.0, "--max-upload-mb", help="largest artifact or batch accepted"),
    queue_timeout: float = typer.Option(120.0, "--queue-timeout", help="seconds a request waits for the "
                                        "measurement before it (one at a time), then answers 503 busy"),
    request_timeout: float = typer.Option(900.0, "--request-timeout", help="seconds a load (TensorRT engine "
                                          "build), run or measurement may take, then answers 504"),
    tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", help="PEM certificate: serve HTTPS"),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert"),
) -> None:
    """Serve this device's runtimes (Core ML on macOS, TensorRT on Jetson, ONNX Runtime / OpenVINO
    elsewhere) to `deploykit profile` on the host.

    On the host: give the device's YAML `agent: {url: http://THIS-DEVICE:PORT, token_env:
    DEPLOYKIT_AGENT_TOKEN}`, export DEPLOYKIT_AGENT_TOKEN=TOKEN, run `deploykit profile ART --device NAME`.
    """
    try:
        from deploykit.agent.server import ServeConfig, create_app, run_server
    except ImportError as exc:
        raise missing_extra(exc.name or "fastapi", "agent") from exc

    loopback = _is_loopback(host)
    if not loopback and token_file is None:
        raise DeployKitError(f"--host {host} accepts other machines: it needs a --token-file",
                             fix="write a long random token to a file only you can read (`openssl rand -hex "
                                 "32 > ~/.deploykit/agent-token; chmod 600 ~/.deploykit/agent-token`), pass "
                                 "--token-file")
    token = _read_token(token_file) if token_file else secrets.token_urlsafe(32)
    config = ServeConfig(store=store.expanduser(), token=token, host=host, port=port,
                         max_upload_mb=max_upload_mb, queue_timeout_s=queue_timeout,
                         request_timeout_s=request_timeout, tls_cert=tls_cert, tls_key=tls_key)
    if not loopback and tls_cert is None:
        err_console.print(f"warning: serving plain HTTP on {host}: the token and artifacts cross the network "
                          "unencrypted; use --tls-cert/--tls-key (or an SSH tunnel to a loopback agent)",
                          highlight=False, markup=False)
    agent_app_ = create_app(config)
    _announce(agent_app_.state.agent, config, generated=token_file is None)
    run_server(agent_app_, config)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _read_token(path: Path) -> str:
    try:
        token = path.expanduser().read_text().strip()
        mode = path.expanduser().stat().st_mode
    except OSError as exc:
        raise DeployKitError(f"cannot read the token file {path}: {exc}",
                             fix="check the --token-file path") from exc
    if not token:
        raise DeployKitError(f"the token file {path} is empty", fix="write a long random token into it")
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        err_console.print(f"warning: {path} is readable by other users; chmod 600 it", highlight=False,
                          markup=False)
    return token


def _announce(agent, config, *, generated: bool) -> None:
    scheme = "https" if config.tls_cert else "http"
    runtimes = agent.facts["runtimes"]
    ready = [f"{name} {info['version']}" for name, info in runtimes.items() if info["available"]] or ["none"]
    console.print(f"deploykit agent on {scheme}://{config.host}:{config.port}, store {config.store} "
                  f"({agent.store.count()} artifacts; {len(agent.swept)} leftovers removed)", highlight=False,
                  markup=False, soft_wrap=True)
    console.print(f"runtimes: {', '.join(ready)}", highlight=False, markup=False, soft_wrap=True)
    if generated:
        console.print("token (shown once; on the host: export DEPLOYKIT_AGENT_TOKEN=...):", highlight=False,
                      markup=False, soft_wrap=True)
        console.print(config.token, highlight=False, markup=False, soft_wrap=True)
