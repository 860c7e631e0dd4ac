"""deploykit: take a PyTorch vision model to an edge device and prove what it costs and loses.

Every layer is an attribute (`deploykit.zoo.create(...)`, `deploykit.passes.fold_bn(...)`), imported on first
use: a bare `import deploykit` loads no torch, so the CLI's start-up stays fast.
"""

from deploykit.core.lazy import lazy_attributes

__version__ = "0.1.0"

LAYERS = ("core", "data", "zoo", "passes", "export", "runtimes", "profile", "training", "agent", "pipeline", "cli")
__getattr__, __dir__ = lazy_attributes(__name__, LAYERS)
__all__ = ["__version__", *LAYERS]
