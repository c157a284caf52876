"""vesuvius-data: sampling-centric data pipeline for 3D segmentation of huge CT volumes."""

from ._version import __version__
from .index_build import VolumeSource, build_index
from .labels import LabelCensus, LabelSpec, count_labels
from .loader import make_loader
from .patch_index import PatchIndex
from .store import DEFAULT_CHUNKS, VolumeInfo, VolumeStore

__all__ = [
    "DEFAULT_CHUNKS",
    "LabelCensus",
    "LabelSpec",
    "PatchIndex",
    "VolumeInfo",
    "VolumeSource",
    "VolumeStore",
    "build_index",
    "count_labels",
    "make_loader",
    "__version__",
]
