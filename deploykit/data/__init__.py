"""Datasets on disk, the one preprocessing implementation, deterministic batching, calibration sets."""

from deploykit.data.calibration import CalibrationConfig, CalibrationSet, open_calibration
from deploykit.data.datasets import Dataset, Subset, open_dataset
from deploykit.data.loader import batches, split
from deploykit.data.preprocess import preprocess_image

__all__ = ["CalibrationConfig", "CalibrationSet", "Dataset", "Subset", "batches", "open_calibration", "open_dataset",
           "preprocess_image", "split"]
