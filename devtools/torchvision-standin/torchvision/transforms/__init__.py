"""Stand-in: importable names only; each raises when used."""

from torchvision._unavailable import missing


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return missing("torchvision.transforms", name)
