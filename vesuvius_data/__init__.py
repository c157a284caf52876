"""vesuvius-data: sampling-centric data pipeline for 3D segmentation of huge CT volumes.

The stages, each a folder: ``store`` (volumes in zarr) -> ``index`` (patch counts) ->
``sampling`` (strategies) -> ``loader`` (batches). ``labels`` is the convention they share;
``metrics`` and ``repair`` score and clean predictions. Importing the package does not import
torch: ``make_loader`` (the torch-facing part) imports it when first used.
"""

from ._version import __version__
from .index import PatchIndex, VolumeSource, build_index
from .labels import LabelCensus, LabelSpec, count_labels
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


def __getattr__(name: str):
    if name == "make_loader":  # torch comes with it, only when asked for
        from .loader import make_loader

        return make_loader
    raise AttributeError(f"module 'vesuvius_data' has no attribute {name!r}")
