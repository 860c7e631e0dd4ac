"""Package attributes that import their module on first use, so `import deploykit` (and `deploykit --help`)
loads no torch while `deploykit.zoo.create(...)` still works after a bare `import deploykit`."""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_attributes(package: str, submodules: tuple[str, ...] = (), names: dict[str, str] | None = None
                    ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """(`__getattr__`, `__dir__`) for `package`: each of `submodules` is imported when first named, and each
    key of `names` is read from the submodule it maps to."""
    names = names or {}

    def getattr_(name: str) -> object:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted({*submodules, *names})

    return getattr_, dir_
