"""Not torchvision: a stand-in for deploykit's dev venv (see devtools/torchvision-standin/README.md)."""

__version__ = "0.0.0+deploykit.standin"
STANDIN = True  # what tests check to know they are not running the real torchvision
