"""Names that timm imports but deploykit never uses: each raises as soon as it is used."""

from __future__ import annotations

_WHY = ("is not available: this is deploykit's torchvision stand-in (devtools/torchvision-standin); "
        "install a torchvision build that matches your torch")


class _Missing(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"{cls.__module__}.{cls.__qualname__}.{name} {_WHY}")


def missing(module: str, name: str) -> type:
    """A class that can be imported and subclassed, and raises when instantiated."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{module}.{name} {_WHY}")

    return _Missing(name, (), {"__init__": __init__, "__module__": module, "__qualname__": name})
