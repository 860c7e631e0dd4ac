"""Datasets on disk, the one preprocessing implementation, and deterministic batching."""

from deploykit.data.datasets import Dataset, Subset, open_dataset
from deploykit.data.loader import batches, split
from deploykit.data.preprocess import preprocess_image

__all__ = ["Dataset", "Subset", "batches", "open_dataset", "preprocess_image", "split"]
