"""One error type the CLI turns into a single clear line and a non-zero exit."""

from __future__ import annotations


class DeployKitError(Exception):
    """A user-facing failure: what went wrong and, where known, the fix."""

    def __init__(self, message: str, *, fix: str | None = None, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message


class ParityError(DeployKitError):
    """An artifact's outputs moved beyond the tolerance of its precision."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message, fix=fix, exit_code=1)


def install_hint(package: str, extra: str | None) -> str:
    """The pip command that brings `package`: its deploykit extra, or (extra None) deploykit itself, which
    depends on it. The one wording of it: errors and `runtimes.unavailable` both use it."""
    if extra is None:
        return f'pip install --force-reinstall "deploykit" ({package} is one of its own dependencies)'
    return f'pip install "deploykit[{extra}]"'


def missing_extra(package: str, extra: str | None) -> DeployKitError:
    """The error for a backend that is not installed."""
    return DeployKitError(f"{package} is not installed", fix=install_hint(package, extra))


def import_backend(module: str, extra: str | None, *, package: str | None = None):
    """`module` imported, or the error naming the pip command that installs it (`package`: its name on PyPI
    when that differs). Backends are imported where they are used, never at start-up: this is how."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra(package or module.split(".")[0], extra) from exc
