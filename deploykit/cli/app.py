"""The typer app and the one place where errors become a message and an exit code."""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape

from deploykit.core.errors import DeployKitError

app = typer.Typer(
    help="Take a PyTorch vision model to an edge device and prove what it costs and what it loses.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # an error stays one greppable line


def command(fn: Callable) -> Callable:
    """Register `fn` as a command whose failures print one clear message, not a traceback."""
    return app.command()(handled(fn))


def handled(fn: Callable) -> Callable:
    """`fn` with its failures printed as one clear message and an exit code (for commands of sub-apps)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DeployKitError as exc:
            _fail(exc.message, exc.fix, exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", None, 130)
        except OSError as exc:  # a path the system refused (too long, a loop, no permission, a full disk)
            if os.environ.get("DEPLOYKIT_DEBUG"):
                raise
            where = f": {_short(exc.filename)}" if exc.filename else ""
            _fail(f"{exc.strerror or type(exc).__name__}{where}",
                  "check that path: it must exist (for inputs), be writable (for outputs) and be shorter", 2)
        except Exception as exc:  # noqa: BLE001 - last resort: still one line, traceback on request
            if os.environ.get("DEPLOYKIT_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc}", "rerun with DEPLOYKIT_DEBUG=1 and report it", 3)

    return wrapper


def _short(name: object, limit: int = 160) -> str:
    text = str(name)
    return text if len(text) <= limit else f"{text[:limit // 2]}…{text[-limit // 2:]}"


def _fail(message: str, fix: str | None, code: int) -> None:
    # escaped: messages hold brackets (pip install "deploykit[coreml]") that rich would take as markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    if fix:
        err_console.print(f"  [bold]fix:[/] {escape(fix)}", highlight=False)
    raise typer.Exit(code)


def plural(count: int, noun: str) -> str:
    """'1 epoch', '3 epochs'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _register_commands() -> None:
    # importing registers the commands
    from deploykit.cli import eval_cmd, export_cmd, finetune_cmd, models_cmd, prune_cmd  # noqa: F401
    from deploykit.cli import run_cmd  # noqa: F401 - `run` and `check`
    from deploykit.cli import profile_cmd  # noqa: F401
    from deploykit.cli import agent_cmd  # noqa: F401 - `agent serve`
    from deploykit.cli import sweep_cmd  # noqa: F401 - `sweep`


def main() -> None:
    _register_commands()
    sys.exit(cli_command()())


def cli_command():
    """The click command behind `app`, with on/off flags shown without a type: typer's help printed
    `<bool>` beside every flag, as if it took a value."""
    command = typer.main.get_command(app)
    for sub in [command, *getattr(command, "commands", {}).values()]:
        for group in [sub, *getattr(sub, "commands", {}).values()]:
            for param in group.params:
                if getattr(param, "is_flag", False):  # typer's options are its own click's, not click.Option
                    param.metavar = ""
            group.get_help_option = _untyped(group.get_help_option)  # --help is made when help is asked
    return command


def _untyped(get_help_option: Callable) -> Callable:
    def wrapper(ctx):
        option = get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    return wrapper
