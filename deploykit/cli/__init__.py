"""The `deploykit` command. Each command lives in its own module and imports heavy code lazily."""

from deploykit.cli.app import app, main

__all__ = ["app", "main"]
