"""Chunk integrity: what a complete array holds, recorded at write and checked on every read.

zarr reads a chunk file that is absent as the array's fill value (chunks that equal it are never
written), so a deleted label chunk silently becomes background, and a damaged one fails deep in
a codec with a message that names no file. Here:

- at write, ``record_chunks`` stores in the array's own attributes the key, size and CRC-32 of
  every chunk written (``RECORD_KEY``): chunks not listed are legitimately empty;
- every read through ``ChunkReader`` (the loader, the index build, ``VolumeStore.image`` /
  ``label``, the scoring tools) raises ``ChunkError`` naming the volume, the array and the chunk
  key when a recorded chunk is missing or does not decode;
- ``verify_array`` (``VolumeStore.verify``, ``vesuvius-verify``) lists every missing, resized,
  unexpected or (``deep``) damaged chunk without decoding the whole store.

The record lives with the array, not in the store's manifest, so it costs nothing to open a
store and travels with arrays that are copied or registered elsewhere.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import zarr

__all__ = ["RECORD_KEY", "ChunkError", "ChunkProblem", "VerifyReport", "chunk_exists",
           "chunk_index", "record_chunks", "recorded_chunks", "verify_array", "verify_store",
           "where"]

RECORD_KEY = "vesuvius_chunks"
_VOLUME_ARRAY = re.compile(r"(?:^|/)volumes/([^/]+)/([^/]+)$")


class ChunkError(ValueError):
    """A stored chunk is missing or cannot be decoded; says which chunk, and how to repair.

    Constructed from the message alone, as pickling and torch's DataLoader do when they carry it
    out of a worker; ``ChunkError.of`` builds it where the chunk is known.
    """

    problem: str = ""

    @classmethod
    def of(cls, arr: zarr.Array, key: str, location: str, problem: str) -> ChunkError:
        vid, role = where(arr)
        err = cls(f"volume {vid!r}, array {role!r}, chunk {key} in {location}: {problem}; "
                  f"{repair_hint(vid)} (vesuvius-verify STORE --deep lists every damaged chunk)")
        err.problem = problem
        return err


@dataclass(frozen=True)
class ChunkProblem:
    volume_id: str
    role: str
    key: str  # the chunk key inside the array, e.g. "c/0/1/0"
    problem: str

    def __str__(self) -> str:
        return f"volume {self.volume_id!r}, array {self.role!r}, chunk {self.key}: {self.problem}"


@dataclass
class VerifyReport:
    """What ``VolumeStore.verify`` found."""

    problems: list[ChunkProblem] = field(default_factory=list)
    volumes: int = 0
    chunks: int = 0
    unrecorded: list[str] = field(default_factory=list)  # "vid/role" without a chunk record
    repair: dict[str, str] = field(default_factory=dict)  # volume id -> how to repair it

    @property
    def ok(self) -> bool:
        return not self.problems

    def damaged_volumes(self) -> list[str]:
        return sorted({p.volume_id for p in self.problems})


def where(arr: zarr.Array) -> tuple[str, str]:
    """(volume id, role) of a store array, from its path ``volumes/{id}/{role}``; else the path."""
    m = _VOLUME_ARRAY.search(arr.path)
    return (m.group(1), m.group(2)) if m else (arr.path or "<root>", "array")


def _sync(coro: Any) -> Any:
    from zarr.core.sync import sync

    return sync(coro)


def chunk_exists(arr: zarr.Array, key: str) -> bool:
    """Whether chunk ``key`` of ``arr`` is stored (any zarr store)."""
    return bool(_sync(arr.store.exists(f"{arr.path}/{key}".lstrip("/"))))


def _get_many(arr: zarr.Array, keys: list[str]) -> list[bytes | None]:
    """The stored bytes of chunk ``keys`` (None where absent), fetched concurrently."""
    import asyncio

    from zarr.core.buffer import default_buffer_prototype

    prefix = f"{arr.path}/".lstrip("/")
    proto = default_buffer_prototype()

    async def fetch() -> list[Any]:
        return await asyncio.gather(*(arr.store.get(prefix + k, prototype=proto)
                                      for k in keys))

    return [None if b is None else b.to_bytes() for b in _sync(fetch())]


def _stored_keys(arr: zarr.Array) -> list[str]:
    """Chunk keys present in the store (relative to the array)."""
    prefix = f"{arr.path}/".lstrip("/")

    async def listing() -> list[str]:
        return [k async for k in arr.store.list_prefix(prefix)]

    return sorted(k[len(prefix):] for k in _sync(listing()) if k[len(prefix):] != "zarr.json")


def record_chunks(arr: zarr.Array) -> int:
    """Record every stored chunk's size and CRC-32 in the array's attributes; returns the count.

    Call it once the array is fully written. Reading back the compressed chunks costs a small
    fraction of writing them (they are still in the page cache).
    """
    keys = _stored_keys(arr)
    stored = {k: [len(d), zlib.crc32(d)] for k, d in zip(keys, _get_many(arr, keys),
                                                          strict=True) if d is not None}
    arr.attrs[RECORD_KEY] = {"grid": int(arr.nchunks), "stored": stored}
    return len(stored)


def recorded_chunks(arr: zarr.Array) -> dict[str, list[int]] | None:
    """key -> [nbytes, crc32] of the chunks a complete array holds; None when unrecorded.
    A record that is not one (a damaged ``zarr.json``) is an error naming that file."""
    rec = arr.attrs.get(RECORD_KEY)
    if rec is None:
        return None
    stored = rec.get("stored") if isinstance(rec, dict) else None
    if not isinstance(stored, dict) or not all(
            isinstance(v, list) and len(v) == 2 and all(type(x) is int for x in v)
            for v in stored.values()):
        vid, role = where(arr)
        root = getattr(arr.store, "root", arr.store)
        raise ValueError(f"{root}/{arr.path}/zarr.json: its chunk record ({RECORD_KEY}) is "
                         f"damaged; {repair_hint(vid)}")
    return stored


def chunk_index(key: str) -> tuple[int, ...]:
    """Chunk-grid coordinates of a chunk key ("c/0/1/0", or v2-style "0.1.0")."""
    return tuple(int(p) for p in re.split(r"[/.]", key) if p.isdigit())


def repair_hint(volume_id: str) -> str:
    return (f"re-ingest volume {volume_id!r} (vesuvius-ingest SRC STORE --overwrite --ids "
            f"{volume_id}, or VolumeStore.add_volume(..., overwrite=True))")


def verify_array(arr: zarr.Array, *, deep: bool = False) -> tuple[list[ChunkProblem], int]:
    """Problems of one array and the number of chunks checked.

    Without ``deep``: recorded chunks that are absent or changed size, and chunks that are
    present but were never recorded (written after the volume was published). With ``deep``:
    also each chunk's CRC-32 and whether it decodes (arrays without a record: decode only).
    """
    from .chunk_reader import ChunkReader

    vid, role = where(arr)
    record = recorded_chunks(arr)
    present = _stored_keys(arr)
    problems: list[ChunkProblem] = []
    if record is not None:
        for key in sorted(set(record) - set(present)):
            problems.append(ChunkProblem(vid, role, key, "missing"))
        for key in sorted(set(present) - set(record)):
            problems.append(ChunkProblem(vid, role, key, "present but not recorded at write"))
    checked = [k for k in present if record is None or k in record]
    if not deep and record is not None:
        sizes = _sizes(arr, checked)
        for key in checked:
            if sizes[key] != record[key][0]:
                problems.append(ChunkProblem(vid, role, key, f"{sizes[key]} bytes, recorded "
                                             f"{record[key][0]}"))
    if deep:
        reader = ChunkReader(arr)
        for key, data in zip(checked, _get_many(arr, checked), strict=True):
            data = data or b""
            if record is not None and zlib.crc32(data) != record[key][1]:
                problems.append(ChunkProblem(vid, role, key, "content differs from the "
                                             "checksum recorded at write"))
                continue
            try:
                reader.read(chunk_index(key))
            except ChunkError as e:
                problems.append(ChunkProblem(vid, role, key, e.problem))
    return problems, len(present) if record is None else len(set(record) | set(present))


def _sizes(arr: zarr.Array, keys: list[str]) -> dict[str, int]:
    prefix = f"{arr.path}/".lstrip("/")
    return {k: _sync(arr.store.getsize(prefix + k)) for k in keys}


def verify_store(store: Any, volume_ids: list[str] | None = None, *, deep: bool = False,
                 progress: bool = False) -> VerifyReport:
    """``verify_array`` over every array (image, label, derived targets) of the given volumes of
    a ``VolumeStore`` (default all), with a repair hint per damaged volume."""
    from tqdm.auto import tqdm

    report = VerifyReport()
    ids = store.ids() if volume_ids is None else [store.info(v).volume_id for v in volume_ids]
    for vid in tqdm(ids, desc="verify", unit="vol", disable=None if progress else True):
        report.volumes += 1
        for role in ("image", "label", *store.info(vid).derived):
            try:
                arr = store.zarr_array(vid, role)
            except (KeyError, FileNotFoundError):
                report.problems.append(ChunkProblem(vid, role, "*", "array missing"))
                continue
            problems, checked = verify_array(arr, deep=deep)
            report.problems += problems
            report.chunks += checked
            if recorded_chunks(arr) is None:
                report.unrecorded.append(f"{vid}/{role}")
    for vid in report.damaged_volumes():
        source = store.info(vid).source
        report.repair[vid] = repair_hint(vid) + (f"; its source: {source}" if source else "")
    return report
