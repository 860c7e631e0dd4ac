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


def missing_extra(package: str, extra: str) -> DeployKitError:
    """The error for an optional backend that is not installed."""
    return DeployKitError(
        f"{package} is not installed",
        fix=f'pip install "deploykit[{extra}]"',
    )
