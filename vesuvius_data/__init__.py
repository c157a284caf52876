"""vesuvius-data: sampling-centric data pipeline for 3D segmentation of huge CT volumes."""

from .labels import LabelCensus, LabelSpec, count_labels
from .store import DEFAULT_CHUNKS, VolumeInfo, VolumeStore

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CHUNKS",
    "LabelCensus",
    "LabelSpec",
    "VolumeInfo",
    "VolumeStore",
    "count_labels",
    "__version__",
]
