"""Stage 2, the patch index: per-patch label counts computed once by numba kernels over dask
blocks, then sampled from by the strategies.

``_kernels`` (numba cell counts), ``block_counts`` (one dask block, with boundary corrections
across faces), ``build`` (``build_index``: batches, incremental reuse, Dask distributed),
``patch_index`` (``PatchIndex``: the table, its statistics, atomic save/load), ``report``
(summary and PNG). Reads the store; nothing here imports torch.
"""

from .build import SmallVolumeWarning, VolumeSource, build_index, sources_from_store
from .patch_index import (
    CLASS_WEIGHT_SCHEMES,
    COUNT_COLUMNS,
    IndexParams,
    PatchIndex,
    default_index_path,
    default_stride,
)

__all__ = ["CLASS_WEIGHT_SCHEMES", "COUNT_COLUMNS", "IndexParams", "PatchIndex",
           "SmallVolumeWarning", "VolumeSource", "build_index", "default_index_path",
           "default_stride", "sources_from_store"]
