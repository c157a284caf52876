"""Stage 1, the store: volumes in a chunked zarr v3 group, written atomically, read lazily
through checked reads.

``volume_store`` (``VolumeStore``), ``volume_info`` (per-volume metadata and input checks),
``chunk_reader`` (the one read path: fast numcodecs decode, bounded window cache),
``integrity`` (chunk records, ``ChunkError``, verification), ``competition`` (ingest of the
Vesuvius layout, ``read_tif``), ``handles`` (volumes by id from TIF folders, zips or a store, for
the scoring tools), ``census`` (label census per scroll). Nothing here imports torch.
"""

from .chunk_reader import ChunkReader, FastArray, WindowCache
from .integrity import ChunkError, ChunkProblem, VerifyReport
from .volume_info import VolumeInfo
from .volume_store import DEFAULT_CHUNKS, DEFAULT_COMPRESSOR, VolumeStore

__all__ = ["ChunkError", "ChunkProblem", "ChunkReader", "DEFAULT_CHUNKS", "DEFAULT_COMPRESSOR",
           "FastArray", "VerifyReport", "VolumeInfo", "VolumeStore", "WindowCache"]
