"""Decoded chunks shared by every worker of a loader: one memory budget, one copy per chunk.

A per-worker LRU multiplies memory by the workers (16 workers, 16 copies of the hot chunks)
and splits the hits: consecutive batches, which the sampler arranges to share chunks, go to
different workers. ``SharedChunkCache`` keeps decoded chunks in shared memory that the loader
allocates once, before its workers start; every worker finds what any worker decoded.

Layout: one pool per role (image, label, each derived target), its budget share proportional
to the role's chunk size, of fixed slots of that role's largest chunk. A slot table (chunk key,
clipped shape, reference bit) lives beside the slots, and CLOCK evicts (LRU's behaviour at a
fraction of its bookkeeping). Tables and slots change only under the pool's lock; a hit copies
its piece of the chunk out while it holds the lock (a few microseconds; nothing can evict
the slot meanwhile), a miss decodes outside the lock so that workers decode in parallel.

The memory is torch shared memory: it survives fork and spawn workers alike (torch passes it
by file descriptor), and is freed when the loader and its workers are gone.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["SharedChunkCache"]

_AXIS_BITS = 15  # chunk grid coordinates per axis in a key: 32768 chunks (2 M voxels at 64)


class _Pool:
    """Fixed slots of ``slot_bytes`` for one role's chunks, with their table and lock."""

    def __init__(self, slots: int, slot_bytes: int, lock: Any) -> None:
        self.slots, self.slot_bytes, self.lock = slots, slot_bytes, lock
        # fresh shared memory, untouched: a slot costs memory only once a chunk is stored in
        # it (torch.zeros(...).share_memory_() would make the whole budget resident at once)
        self.data = torch.empty(0, dtype=torch.uint8).set_(
            torch.UntypedStorage._new_shared(slots * slot_bytes))
        self.keys = torch.full((slots,), -1, dtype=torch.int64).share_memory_()
        self.shapes = torch.zeros((slots, 3), dtype=torch.int64).share_memory_()
        self.ref = torch.zeros(slots, dtype=torch.uint8).share_memory_()
        self.hand = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._np: dict[str, np.ndarray] | None = None
        self._seen: dict[int, int] = {}  # key -> slot where this process last found it

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_np": None, "_seen": {}}  # numpy views pickle as copies

    @property
    def np(self) -> dict[str, np.ndarray]:
        """numpy views of the shared tensors (made once per process: ~1 us each)."""
        if self._np is None:
            self._np = {k: getattr(self, k).numpy() for k in ("data", "keys", "shapes", "ref",
                                                               "hand")}
        return self._np

    def view(self, slot: int, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
        n = math.prod(shape) * dtype.itemsize  # np.prod costs 20 us a call, math.prod 0.3
        raw = self.np["data"][slot * self.slot_bytes: slot * self.slot_bytes + n]
        return raw.view(dtype).reshape(tuple(shape))

    def find(self, key: int) -> int:
        """The slot holding ``key``, or -1; call under the lock. Where this process last saw
        the key is checked first (one compare), the whole table only when it moved."""
        keys = self.np["keys"]
        slot = self._seen.get(key, -1)
        if slot >= 0 and keys[slot] == key:
            return slot
        hit = np.flatnonzero(keys == key)
        if hit.size:
            self._seen[key] = int(hit[0])
            return int(hit[0])
        self._seen.pop(key, None)
        return -1

    def victim(self) -> int:
        """CLOCK: the first slot from the hand whose reference bit is clear (bits cleared on
        the way); the hand moves past it."""
        ref, hand, n = self.np["ref"], self.np["hand"], self.slots
        h = int(hand[0])
        while ref[h]:
            ref[h] = 0
            h = (h + 1) % n
        hand[0] = (h + 1) % n
        return h


class SharedChunkCache:
    """Decoded chunks of a loader's volumes, shared by its workers (see module docstring).

    ``slot_bytes`` maps each role to its largest chunk in bytes; ``max_bytes`` is the budget of
    all pools together. Create it in the loader's process before workers start, with the
    workers' ``multiprocessing`` context (a lock made for fork cannot reach spawn workers).
    """

    def __init__(self, volume_ids: Sequence[str], slot_bytes: dict[str, int], max_bytes: int,
                 context: str | None = None) -> None:
        ctx = multiprocessing.get_context(context)
        total = sum(slot_bytes.values())
        self._volume = {str(v): i for i, v in enumerate(volume_ids)}
        self._pools = {role: _Pool(max(2, int(max_bytes * nbytes / total) // nbytes), nbytes,
                                   ctx.Lock())
                       for role, nbytes in slot_bytes.items()}
        self.max_bytes = sum(p.slots * p.slot_bytes for p in self._pools.values())

    def _key(self, volume_id: str, idx: tuple[int, ...]) -> int:
        key = self._volume[volume_id]
        for i in idx:
            if not 0 <= i < 1 << _AXIS_BITS:
                raise ValueError(f"chunk index {idx} exceeds the shared cache's key range")
            key = (key << _AXIS_BITS) | int(i)
        return key

    def copy_into(self, volume_id: str, role: str, idx: tuple[int, ...], dtype: np.dtype,
                  load: Callable[[], np.ndarray], src: tuple[slice, ...],
                  dst: np.ndarray) -> int:
        """Copy ``chunk[src]`` into ``dst``, decoding the chunk with ``load()`` (and keeping it
        for every worker) when no worker has it yet; returns the bytes decoded (0 on a hit)."""
        pool, key = self._pools[role], self._key(volume_id, idx)
        with pool.lock:
            slot = pool.find(key)
            if slot >= 0:
                pool.np["ref"][slot] = 1
                dst[...] = pool.view(slot, pool.np["shapes"][slot], dtype)[src]
                return 0
        data = load()
        if data.nbytes > pool.slot_bytes:
            raise ValueError(f"chunk of {data.nbytes} bytes does not fit the {role} pool's "
                             f"{pool.slot_bytes}-byte slots")
        with pool.lock:
            if pool.find(key) < 0:  # another worker may have stored it meanwhile
                slot, t = pool.victim(), pool.np
                t["keys"][slot] = -1  # a torn slot is never found, whatever happens below
                pool.view(slot, data.shape, data.dtype)[...] = data
                t["shapes"][slot] = data.shape
                t["ref"][slot] = 1
                t["keys"][slot] = key
                pool._seen[key] = slot
        dst[...] = data[src]
        return data.nbytes

    @property
    def cached_bytes(self) -> int:
        """Bytes of the chunks held now (slots in use times their chunks' sizes, roughly)."""
        return sum(int((p.np["keys"] >= 0).sum()) * p.slot_bytes for p in self._pools.values())
