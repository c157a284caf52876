"""VolumeStore: image/label volumes in one chunked zarr v3 group, read lazily as dask arrays.

Layout::

    store.zarr/                      root group; attrs["vesuvius_data"] is the manifest
      volumes/{id}/image             the image in its own dtype (uint8/16, int16, float16/32)
      volumes/{id}/label             uint8 array, values in the LabelSpec

The manifest in the root group's attributes lists every *complete* volume with its scroll id,
shape, source and label census. A volume enters the manifest only after all of its chunks are
written, and leaves it before an overwrite starts, so a crash mid-write leaves a volume that is
simply absent (and is redone by the next ingest), never one that looks complete but is torn.
The manifest also makes read-only remote stores work over plain HTTP, where nothing can be
listed: ``ids()`` reads one JSON document.

Volumes that already live in other zarr / OME-Zarr stores can be registered by URL without
copying; the manifest then records where their arrays are.

One process writes a store at a time (threads within it are fine); readers can be many.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr
import zarr.storage
from zarr.codecs import BloscCodec
from zarr.errors import ContainsArrayError, ContainsGroupError

from ..labels import LabelCensus, LabelSpec
from .chunk_reader import FastArray
from .integrity import VerifyReport, record_chunks, verify_store
from .ome import array_url
from .volume_info import (
    ID_PATTERN,
    VolumeInfo,
    check_spacing,
    check_volume_id,
    intensity_stats,
    is_url,
    validate_pair,
)

__all__ = ["VolumeStore", "VolumeInfo", "DEFAULT_CHUNKS", "DEFAULT_COMPRESSOR"]

#: 64^3 chunks: a random 128^3 window decodes 3.3x the bytes it needs (128^3 chunks: 7.9x) and
#: the index and chunk caches get fine work units; 32^3 chunks drown in per-chunk overhead
#: (3.5x fewer windows/s). Measured by benchmarks/bench_store.py; figures in the README.
DEFAULT_CHUNKS: tuple[int, int, int] = (64, 64, 64)
#: Blosc-LZ4 reads random windows ~15 % faster than zstd-1 for ~15 % more disk: patch reads
#: and index builds are bound by decoding, not by disk.
DEFAULT_COMPRESSOR: dict[str, Any] = {"cname": "lz4", "clevel": 5, "shuffle": "noshuffle"}

_MANIFEST_KEY = "vesuvius_data"
_FORMAT_VERSION = 1


#: What zarr and json raise for a damaged zarr.json (a value of the wrong type fails deep
#: inside zarr's parsers as any of these).
METADATA_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OverflowError,
                   IndexError, NotImplementedError)


def _require_group(parent: zarr.Group, name: str) -> zarr.Group:
    """``parent.require_group(name)`` safe against a concurrent creator: zarr checks, then
    creates, so a torchrun rank or Dask task that creates the group in between makes the
    loser's create fail with ContainsGroupError although the group is exactly what it wants."""
    try:
        return parent.require_group(name)
    except ContainsGroupError:
        return parent[name]  # type: ignore[return-value]


class VolumeStore:
    """A zarr v3 group of image/label volumes (see module docstring for the layout).

    Example:
        >>> store = VolumeStore.create("data.zarr")               # doctest: +SKIP
        >>> store.add_volume("v0", image, label, scroll_id="1")   # doctest: +SKIP
        >>> store.image("v0")                                     # lazy dask array
    """

    def __init__(self, group: zarr.Group, *, location: str = "<memory>") -> None:
        meta = group.attrs.get(_MANIFEST_KEY)
        if not isinstance(meta, dict) or "volumes" not in meta:
            raise ValueError(
                f"{location} is a zarr group but not a vesuvius-data VolumeStore "
                "(no manifest); create one with VolumeStore.create()"
            )
        self._group = group
        self._location = location
        self._lock = threading.Lock()
        self._meta: dict[str, Any] = meta
        try:  # every later read trusts the manifest: a damaged one is named here, once
            self.label_spec = LabelSpec.from_dict(meta["label_spec"])
            chunks = meta["chunks"]
            if not (isinstance(chunks, list) and len(chunks) == 3
                    and all(isinstance(c, int) and c > 0 for c in chunks)):
                raise ValueError(f"chunks {chunks!r} are not three positive ints")
            if not isinstance(meta["volumes"], dict):
                raise ValueError("its volume list is not a mapping")
            for vid, entry in meta["volumes"].items():
                try:
                    VolumeInfo.from_json(entry)
                except METADATA_ERRORS as e:
                    raise ValueError(f"volume {vid!r}: {e}") from None
        except METADATA_ERRORS as e:
            raise ValueError(f"{self._metadata_file()}: damaged store manifest "
                             f"({type(e).__name__}: {str(e)[:200]})") from None
        self.chunks: tuple[int, int, int] = tuple(chunks)  # type: ignore[assignment]

    def _metadata_file(self, *parts: str) -> str:
        """The zarr.json of the store's root (or of the node ``parts``), for messages."""
        return os.path.join(self._location, *parts, "zarr.json")

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str] | zarr.storage.StoreLike,
        *,
        label_spec: LabelSpec | None = None,
        chunks: tuple[int, int, int] = DEFAULT_CHUNKS,
        overwrite: bool = False,
    ) -> VolumeStore:
        """Create an empty store at ``path`` (a folder, or any zarr Store object).

        Raises FileExistsError when a store already exists there, unless ``overwrite``.
        """
        if len(chunks) != 3 or any(int(c) < 1 for c in chunks):
            raise ValueError(f"chunks must be three positive ints, got {chunks}")
        location = str(path)
        if isinstance(path, (str, os.PathLike)):
            if is_url(str(path)):
                raise ValueError(f"{path}: remote stores are read-only; create stores locally")
            if Path(path).exists() and any(Path(path).iterdir()) and not overwrite:
                raise FileExistsError(f"{path} exists; open it with VolumeStore.open() "
                                      "or pass overwrite=True")
            path = zarr.storage.LocalStore(str(path))
        group = zarr.open_group(path, mode="w" if overwrite else "a", zarr_format=3)
        if _MANIFEST_KEY in group.attrs and not overwrite:
            raise FileExistsError(f"{location} already holds a VolumeStore")
        spec = label_spec or LabelSpec()
        group.attrs[_MANIFEST_KEY] = {
            "format": _FORMAT_VERSION,
            "label_spec": spec.to_dict(),
            "chunks": [int(c) for c in chunks],
            "compressor": DEFAULT_COMPRESSOR,
            "volumes": {},
        }
        group.require_group("volumes")
        return cls(group, location=location)

    @classmethod
    def open(
        cls,
        path_or_url: str | os.PathLike[str] | zarr.storage.StoreLike,
        mode: str = "r",
        *,
        storage_options: dict[str, Any] | None = None,
    ) -> VolumeStore:
        """Open an existing store: a folder, an ``http(s)://`` / fsspec URL, or a Store object.

        ``mode`` is "r" (read-only) or "a" (read/write; local stores only).
        """
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        location = str(path_or_url)
        if isinstance(path_or_url, (str, os.PathLike)):
            p = str(path_or_url)
            if is_url(p):
                if mode != "r":
                    raise ValueError(f"{p}: remote stores are read-only; open with mode='r'")
                path_or_url = zarr.storage.FsspecStore.from_url(
                    p, storage_options=storage_options, read_only=True
                )
            else:
                if not Path(p).exists():
                    raise FileNotFoundError(f"no store at {p}")
                path_or_url = zarr.storage.LocalStore(p, read_only=(mode == "r"))
        try:
            group = zarr.open_group(path_or_url, mode="r" if mode == "r" else "r+")
        except FileNotFoundError as e:
            raise FileNotFoundError(f"no zarr group at {location}") from e
        except METADATA_ERRORS as e:  # a damaged zarr.json: JSON or metadata
            raise ValueError(f"{location}: unreadable store metadata "
                             f"({os.path.join(location, 'zarr.json')}: {type(e).__name__}: "
                             f"{str(e)[:200]})") from None
        return cls(group, location=location)

    # ------------------------------------------------------------------ reading
    @property
    def location(self) -> str:
        return self._location

    def ids(self) -> list[str]:
        """Ids of complete volumes, sorted."""
        return sorted(self._meta["volumes"])

    def __contains__(self, volume_id: object) -> bool:
        return str(volume_id) in self._meta["volumes"]

    def __len__(self) -> int:
        return len(self._meta["volumes"])

    def info(self, volume_id: str) -> VolumeInfo:
        vols = self._meta["volumes"]
        if str(volume_id) not in vols:
            known = ", ".join(self.ids()[:10]) or "none"
            raise KeyError(f"no complete volume {volume_id!r} in {self._location} "
                           f"(known: {known}{', ...' if len(vols) > 10 else ''})")
        return VolumeInfo.from_json(vols[str(volume_id)])

    def zarr_array(self, volume_id: str, role: str) -> zarr.Array:
        """The zarr array behind a volume's ``role`` ("image", "label", or a derived target)."""
        info = self.info(volume_id)
        if role in info.external:
            return zarr.open_array(info.external[role], mode="r")
        node = f"volumes/{info.volume_id}/{role}"
        try:
            arr = self._group[node]
            arr.attrs.asdict()  # zarr parses "attributes" lazily; a damaged one fails here
        except KeyError:
            raise KeyError(f"volume {volume_id!r} of {self._location} has no {role!r} array "
                           f"({self._metadata_file(node)}: missing or not a file)") from None
        except METADATA_ERRORS as e:
            raise ValueError(f"{self._metadata_file(node)}: unreadable array metadata "
                             f"({type(e).__name__}: {str(e)[:200]})") from None
        voxelwise = role in ("image", "label") or role in info.derived  # not, e.g., "done"
        if not isinstance(arr, zarr.Array) or (voxelwise and tuple(arr.shape) != info.shape):
            what = f"shape {tuple(arr.shape)}" if isinstance(arr, zarr.Array) else "a group"
            raise ValueError(f"{self._metadata_file(node)}: {what}, but the store's manifest "
                             f"says volume {volume_id!r} is {info.shape}")
        return arr

    def array(self, volume_id: str, role: str) -> FastArray:
        """A volume's ``role`` as a numpy-indexable array whose reads are checked: a missing or
        undecodable chunk raises ``ChunkError`` naming volume, array and chunk."""
        return FastArray(self.zarr_array(volume_id, role))

    def lazy(self, volume_id: str, role: str,
             chunks: tuple[int, int, int] | None = None) -> da.Array:
        """Lazy dask view of any role, read through checked reads; one dask chunk per zarr
        chunk unless ``chunks`` (best a multiple of the zarr chunks) groups several."""
        arr = self.array(volume_id, role)
        chunks = chunks or tuple(arr.arr.chunks)
        token = self.info(volume_id).generation or uuid.uuid4().hex
        return da.from_array(arr, chunks=chunks, asarray=False, fancy=False,
                             name=f"vd-{role}-{volume_id}-{token}-{'x'.join(map(str, chunks))}")

    def image(self, volume_id: str, chunks: tuple[int, int, int] | None = None) -> da.Array:
        """Lazy dask view of the image (see ``lazy``)."""
        return self.lazy(volume_id, "image", chunks)

    def label(self, volume_id: str, chunks: tuple[int, int, int] | None = None) -> da.Array:
        """Lazy dask view of the label (values per ``label_spec``; see ``lazy``)."""
        return self.lazy(volume_id, "label", chunks)

    def verify(self, volume_ids: list[str] | None = None, *, deep: bool = False,
               progress: bool = False) -> VerifyReport:
        """Check every stored chunk of the given volumes (default all) against the record
        written with it: missing, resized or unexpected chunks; with ``deep`` also checksums
        and decoding. Reads no chunk data unless ``deep``."""
        return verify_store(self, volume_ids, deep=deep, progress=progress)

    def census(self, volume_ids: list[str] | None = None) -> LabelCensus:
        """Sum of the stored per-volume censuses (volumes without one are skipped)."""
        total = LabelCensus.zero()
        for vid in volume_ids if volume_ids is not None else self.ids():
            c = self.info(vid).census
            if c is not None:
                total = total + c
        return total

    # ------------------------------------------------------------------ writing
    def _writable(self) -> None:
        if getattr(self._group.store, "read_only", False):
            raise PermissionError(f"{self._location} is open read-only; open it with "
                                  "VolumeStore.open(path, mode='a') to write")

    def _commit(self, volume_id: str, entry: dict[str, Any] | None) -> None:
        """Add (entry) or drop (None) a manifest entry; the one write that publishes a volume."""
        with self._lock:
            # the manifest as stored now: another process (a prediction rank) may have
            # published a volume since this one opened the store
            stored = zarr.open_group(self._group.store, path=self._group.path,
                                     mode="r+").attrs.get(_MANIFEST_KEY)
            meta = dict(stored if isinstance(stored, dict) else self._meta)
            vols = dict(meta["volumes"])
            if entry is None:
                vols.pop(volume_id, None)
            else:
                vols[volume_id] = entry
            meta["volumes"] = vols
            self._group.attrs[_MANIFEST_KEY] = meta
            self._meta = meta

    def add_volume(
        self,
        volume_id: str,
        image: np.ndarray,
        label: np.ndarray,
        scroll_id: str | int | None = None,
        *,
        source: str | None = None,
        overwrite: bool = False,
        spacing: tuple[float, float, float] | None = None,
    ) -> VolumeInfo:
        """Validate and write one volume; it becomes visible only once fully written.

        The image is stored in its own dtype (uint8, uint16, int16, float16 or float32);
        ``spacing`` is the voxel size (z, y, x) if known. Foreground intensity statistics
        are gathered on the way (``VolumeInfo.intensity``, for CT-style normalisation).

        Raises:
            FileExistsError: ``volume_id`` is already complete and ``overwrite`` is False.
            ValueError: non-3-D input, mismatched shapes, bad dtypes, NaN or infinite image
                values, label values outside the spec, bad spacing.
        """
        self._writable()
        volume_id = check_volume_id(volume_id)
        image, label = np.asarray(image), np.asarray(label)
        census = validate_pair(image, label, self.label_spec, f"volume {volume_id}")
        spacing = check_spacing(spacing, f"volume {volume_id}")
        intensity = intensity_stats(image, label, self.label_spec)
        if volume_id in self:
            if not overwrite:
                raise FileExistsError(f"volume {volume_id!r} already exists in "
                                      f"{self._location}; pass overwrite=True to replace it")
            self._commit(volume_id, None)  # unpublish first: a crash now leaves it absent
        arrays = self.partial_arrays(volume_id, image.shape, {"image": image.dtype,
                                                              "label": np.uint8},
                                     overwrite=True)
        arrays["image"][...] = image
        arrays["label"][...] = label.astype(np.uint8, copy=False)
        return self.publish(volume_id, scroll_id=scroll_id, source=source, census=census,
                            spacing=spacing, intensity=intensity)

    def partial_arrays(self, volume_id: str, shape: tuple[int, ...],
                       dtypes: dict[str, Any], *, overwrite: bool = False
                       ) -> dict[str, zarr.Array]:
        """The arrays of a volume being written, not yet published (``publish`` does that).

        Created on the first call, chunked like the store; a later call (a resumed write)
        returns the existing arrays when shape and dtype fit and raises ValueError when not.
        ``overwrite`` starts the volume's group afresh.
        """
        self._writable()
        volume_id = check_volume_id(volume_id)
        volumes = _require_group(self._group, "volumes")
        vgroup = volumes.create_group(volume_id, overwrite=True) if overwrite else \
            _require_group(volumes, volume_id)
        chunks = tuple(min(c, int(s)) for c, s in zip(self.chunks, shape, strict=True))
        out = {}
        for role, dtype in dtypes.items():
            try:
                arr = vgroup.create_array(role, shape=tuple(shape), dtype=dtype, chunks=chunks,
                                          compressors=BloscCodec(**DEFAULT_COMPRESSOR),
                                          fill_value=0, dimension_names=("z", "y", "x"))
            except ContainsArrayError:  # a resumed write, or another process got here first
                arr = vgroup[role]
                if tuple(arr.shape) != tuple(shape) or np.dtype(arr.dtype) != np.dtype(dtype):
                    raise ValueError(f"{volume_id}/{role} in {self._location} is "
                                     f"{arr.dtype}{tuple(arr.shape)}, this write needs "
                                     f"{np.dtype(dtype)}{tuple(shape)}") from None
            out[role] = arr
        return out  # type: ignore[return-value]

    def publish(self, volume_id: str, *, scroll_id: str | int | None = None,
                source: str | None = None, census: LabelCensus | None = None,
                record: bool = True, spacing: tuple[float, float, float] | None = None,
                intensity: dict[str, float] | None = None) -> VolumeInfo:
        """Add a volume whose arrays (``partial_arrays``) are fully written to the manifest.

        ``record`` lists every chunk's size and CRC for checked reads (it reads the chunks
        back: right for ingest, too slow for scroll-scale outputs, which their writer tracks
        block by block).
        """
        self._writable()
        vgroup = self._group["volumes"][volume_id]
        if "image" not in vgroup or "label" not in vgroup:
            raise ValueError(f"volume {volume_id!r} needs an image and a label to be published")
        if record:
            for role in ("image", "label"):
                record_chunks(vgroup[role])  # what a complete array holds, checked on reads
        info = VolumeInfo(
            volume_id=volume_id,
            shape=tuple(int(s) for s in vgroup["image"].shape),  # type: ignore[arg-type]
            scroll_id=None if scroll_id is None else str(scroll_id),
            source=source,
            census=census,
            generation=uuid.uuid4().hex,
            spacing=check_spacing(spacing, f"volume {volume_id}"),
            intensity=intensity,
        )
        vgroup.attrs.update(info.to_json() | {"label_spec": self.label_spec.to_dict()})
        self._commit(volume_id, info.to_json())
        return info

    def add_derived(self, volume_id: str, arrays: dict[str, da.Array | np.ndarray],
                    params: dict[str, Any] | None = None) -> None:
        """Store derived targets (e.g. {"sdt": ..., "skeleton": ...}) beside a volume's label.

        Chunked like the volume; dask inputs stream block by block in one computation (their
        shared tasks run once). Published in the manifest only once fully written: a crash
        leaves them absent and a rerun derives them again.
        """
        self._writable()
        info = self.info(volume_id)
        vgroup = self._group.require_group("volumes").require_group(info.volume_id)
        chunks = tuple(min(c, s) for c, s in zip(self.chunks, info.shape, strict=True))
        sources, targets = [], []
        for role, data in arrays.items():
            if role in ("image", "label") or not ID_PATTERN.match(role):
                raise ValueError(f"invalid derived role {role!r}")
            if tuple(data.shape) != info.shape:
                raise ValueError(f"{role} of shape {tuple(data.shape)} does not match volume "
                                 f"{volume_id} of shape {info.shape}")
            arr = vgroup.create_array(role, shape=info.shape, dtype=data.dtype, chunks=chunks,
                                      compressors=BloscCodec(**DEFAULT_COMPRESSOR),
                                      fill_value=0, dimension_names=("z", "y", "x"),
                                      overwrite=True)
            if isinstance(data, da.Array):
                aligned = all(all(c % k == 0 for c in dc[:-1]) for dc, k in
                              zip(data.chunks, chunks, strict=True))
                sources.append(data if aligned else data.rechunk(chunks))
                targets.append(arr)
            else:
                arr[...] = np.asarray(data)
        if sources:
            da.store(sources, targets, lock=False)
        for role in arrays:
            record_chunks(vgroup[role])  # type: ignore[arg-type]
        entry = info.to_json()
        entry["derived"] = dict(info.derived) | {role: dict(params or {}) for role in arrays}
        self._commit(info.volume_id, entry)

    def register(
        self,
        volume_id: str,
        image: zarr.Array | str,
        label: zarr.Array | str,
        scroll_id: str | int | None = None,
        *,
        level: int | None = None,
        overwrite: bool = False,
    ) -> VolumeInfo:
        """Use arrays that live in other zarr / OME-Zarr stores, without copying.

        ``image`` and ``label`` are zarr arrays in a persistent store, or URLs/paths of arrays
        or of OME-Zarr multiscale groups (then ``level`` picks the resolution, default 0).
        Label values are not scanned here (that could mean reading terabytes); the index build
        checks them in its single pass.
        """
        self._writable()
        volume_id = check_volume_id(volume_id)
        if volume_id in self and not overwrite:
            raise FileExistsError(f"volume {volume_id!r} already exists in {self._location}")
        urls = {"image": array_url(image, level), "label": array_url(label, level)}
        arrays = {role: zarr.open_array(url, mode="r") for role, url in urls.items()}
        where = f"register {volume_id}"
        for role, arr in arrays.items():
            if arr.ndim != 3:
                raise ValueError(f"{where}: {role} at {urls[role]} is not 3-D: {arr.shape}")
        if arrays["image"].shape != arrays["label"].shape:
            raise ValueError(f"{where}: image shape {arrays['image'].shape} differs from "
                             f"label shape {arrays['label'].shape}")
        if not np.issubdtype(arrays["label"].dtype, np.integer):
            raise ValueError(f"{where}: label dtype must be integer, got {arrays['label'].dtype}")
        info = VolumeInfo(
            volume_id=volume_id,
            shape=tuple(int(s) for s in arrays["image"].shape),  # type: ignore[arg-type]
            scroll_id=None if scroll_id is None else str(scroll_id),
            source=urls["image"],
            external=urls,
            generation=uuid.uuid4().hex,
        )
        self._commit(volume_id, info.to_json())
        return info

    def remove(self, volume_id: str) -> None:
        """Drop a volume from the manifest and delete its stored arrays (not external ones)."""
        self._writable()
        self.info(volume_id)
        self._commit(str(volume_id), None)
        vols = self._group.require_group("volumes")
        if str(volume_id) in vols:
            del vols[str(volume_id)]

    def __repr__(self) -> str:
        return f"VolumeStore({self._location!r}, volumes={len(self)})"

