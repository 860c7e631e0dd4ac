"""deploykit: take a PyTorch vision model to an edge device and prove what it costs and loses."""

__version__ = "0.1.0"
