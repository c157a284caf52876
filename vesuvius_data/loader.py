"""The fast loader: a strategy chooses index rows in the main process, workers read windows.

- ``RowSampler`` (a ``torch.utils.data.Sampler``) lives in the main process. It draws rows from
  the strategy in small windows, so hard-negative feedback (``strategy.update``) steers the
  next draws with no cross-process state, sorts each window by position so patches that share
  chunks are read together, and gives every item its own seed. Everything follows from
  ``(seed, epoch)``: runs reproduce with any number of workers, fork or spawn.
- ``PatchDataset`` (map-style) reads only the patch windows (image, label, and any extra roles
  such as stored derived targets) through a ``WindowCache`` of decoded chunks. With workers,
  the chunks live in one ``SharedChunkCache`` that all of them fill and read: ``cache_bytes``
  is the loader's budget, not each worker's, and a chunk one worker decoded serves them all.

Item: ``image`` float32 (1, P, P, P), z-scored per patch (mean 0, std 1 over the patch; a flat
patch becomes all zeros) or normalised as ``normalize`` says (``normalize.py``: ``unit``,
``ct`` from the store's intensity statistics, ``window:LO,HI``); with
``normalize_on="device"`` the image stays in its stored dtype (uint8: a quarter of the bytes
through shared memory and over PCIe) and ``PatchLoader.to_device`` moves a batch and
normalises it there (with any ``device_transform``, e.g. intensity augmentation, after it);
``label`` uint8 (1, P, P, P) with the ignore value kept; ``row`` (index row), ``seed`` (the
item's seed, which seeds its augmentation), ``location`` (z, y, x corner), ``spacing``
(the volume's voxel size, 1 where unknown) and ``decoded_bytes`` (chunk bytes this item
decoded, for read amplification).
Nothing here assumes Vesuvius ids or label values beyond the store's ``LabelSpec``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info

from .index.patch_index import PatchIndex
from .normalize import DeviceNormalizer, make_normalizer, needs_statistics, pool_intensity
from .sampling import Strategy, make_strategy
from .shared_chunks import SharedChunkCache
from .store import VolumeStore
from .store.chunk_reader import WindowCache

__all__ = ["RowSampler", "PatchDataset", "PatchLoader", "make_loader", "NORMALIZE_ON"]

#: where the image is normalised: in the workers (float32 batches) or on the model's device
#: (batches in the stored dtype; ``PatchLoader.to_device``)
NORMALIZE_ON = ("workers", "device")
#: ``(float image batch on the device, the items' seeds) -> image batch``
DeviceTransform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class RowSampler(Sampler):
    """Yields ``(row, item_seed)`` pairs: ``samples_per_epoch`` draws from ``strategy``.

    Draws come ``window`` at a time, each window sorted by (volume, z, y, x). The epoch
    advances on every pass; ``set_epoch`` sets it (for resuming).

    Data-parallel training (``world`` > 1): every rank draws the same global stream of
    ``samples_per_epoch * world`` items (same seed, and the strategy's state is kept equal on
    all ranks by gathering feedback) and keeps, of each global batch of ``batch_size * world``
    items, its own ``batch_size``: N ranks with batch b see exactly the items, seeds and order
    that one process with batch N*b sees.
    """

    def __init__(self, strategy: Strategy, samples_per_epoch: int, *, seed: int = 0,
                 window: int = 32, rank: int = 0, world: int = 1, batch_size: int = 1) -> None:
        if samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
        self.strategy = strategy
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed, self.window, self.epoch = int(seed), int(window), 0
        self.rank, self.world, self.batch_size = int(rank), int(world), int(batch_size)
        index = strategy.index
        order = np.lexsort((index.columns["gx"], index.columns["gy"], index.columns["gz"],
                            index.volume))
        self._rank = np.empty(len(index), np.int64)  # position of each row in (v, z, y, x)
        self._rank[order] = np.arange(len(index))

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        left = self.samples_per_epoch * self.world
        position, share = 0, self.batch_size * self.world
        while left > 0:
            k = min(self.window, left)  # a window of the global stream
            rows = self.strategy.sample(rng, k)
            seeds = rng.integers(0, 2**63 - 1, size=k)
            order = np.argsort(self._rank[rows], kind="stable")
            for i in order:
                if (position % share) // self.batch_size == self.rank:
                    yield int(rows[i]), int(seeds[i])
                position += 1
            left -= k


class PatchDataset(Dataset):
    """Reads the window of an index row from a store; picklable (workers reopen the store)."""

    def __init__(self, store_location: str, index: PatchIndex, *,
                 roles: tuple[str, ...] = ("image", "label"), normalize: str = "zscore",
                 transforms: Callable[..., Any] | None = None,
                 cache_bytes: int = 512 * 2**20,
                 shared_cache: SharedChunkCache | None = None,
                 statistics: dict[str, float] | None = None,
                 spacing: list[tuple[float, float, float]] | None = None,
                 normalize_on: str = "workers") -> None:
        if normalize_on not in NORMALIZE_ON:
            raise ValueError(f"normalize_on must be one of {', '.join(NORMALIZE_ON)}, got "
                             f"{normalize_on!r}")
        self._normalize = make_normalizer(normalize, statistics)
        self.normalize_on = normalize_on
        if "image" not in roles or "label" not in roles:
            raise ValueError(f"roles must include image and label, got {roles}")
        self.store_location = store_location
        self.volume_ids = index.volume_ids
        self.volume = index.volume
        self.corners = index.corners
        self.patch_size = index.params.patch_size
        self.roles, self.transforms = tuple(roles), transforms
        self.cache_bytes = int(cache_bytes)
        self.shared_cache = shared_cache
        #: voxel size (z, y, x) per volume code; 1 where the store does not know it
        self.spacing = np.asarray(spacing or [(1.0, 1.0, 1.0)] * len(self.volume_ids),
                                  np.float32)
        self._cache: WindowCache | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.volume)

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_cache": None, "_pid": -1}

    def cache(self) -> WindowCache:
        """This process's window cache (opened on first use, once per worker)."""
        if self._cache is None or self._pid != os.getpid():
            store = VolumeStore.open(self.store_location)
            self._cache = WindowCache(store.zarr_array, self.cache_bytes,
                                      shared=self.shared_cache)
            self._pid = os.getpid()
        return self._cache

    def __getitem__(self, item: tuple[int, int] | int) -> dict[str, Any]:
        row, seed = item if isinstance(item, tuple) else (int(item), 0)
        cache = self.cache()
        before = cache.decoded_bytes
        code = int(self.volume[row])
        vid = self.volume_ids[code]
        corner = tuple(int(c) for c in self.corners[row])
        arrays = {r: cache.window(vid, r, corner, self.patch_size) for r in self.roles}
        image = arrays.pop("image")
        image = self._normalize(image) if self.normalize_on == "workers" else \
            np.ascontiguousarray(image)
        out: dict[str, Any] = {
            "image": torch.from_numpy(image[None]),
            "label": torch.from_numpy(np.ascontiguousarray(arrays.pop("label"))[None]),
        }
        for role, data in arrays.items():  # derived targets; float16 on disk, float32 here
            data = data.astype(np.float32) if data.dtype == np.float16 else data
            out[role] = torch.from_numpy(np.ascontiguousarray(data)[None])
        if self.transforms is not None:
            out = _apply_torchio(self.transforms, out, seed, self.spacing[code])
        out |= {"row": row, "seed": seed,  # torch.tensor(tuple) costs 40 us, this 8
                "location": torch.from_numpy(np.array(corner, np.int64)),
                "spacing": torch.from_numpy(self.spacing[code].copy()),
                "decoded_bytes": cache.decoded_bytes - before}
        return out


def _apply_torchio(transform: Callable[..., Any], item: dict[str, Any], seed: int,
                   spacing: np.ndarray) -> dict[str, Any]:
    """Run a torchio transform on the item as a Subject (its images carry the volume's
    spacing in their affine), its randomness seeded by the item."""
    import torchio as tio

    affine = np.diag([*map(float, spacing), 1.0])
    images = {"image": tio.ScalarImage(tensor=item["image"], affine=affine),
              "label": tio.LabelMap(tensor=item["label"], affine=affine)}
    for k, v in item.items():
        if k not in images:
            images[k] = tio.ScalarImage(tensor=v, affine=affine) if v.is_floating_point() \
                else tio.LabelMap(tensor=v, affine=affine)
    with torch.random.fork_rng(devices=[]):  # torchio draws from torch's global generator
        torch.manual_seed(seed)
        subject = transform(tio.Subject(**images))
    # some transforms (resampling) change dtypes; items must collate, so restore them
    return {k: subject[k].data.to(item[k].dtype) for k in images}


def collate_patches(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch items; in a worker, put every patch-sized array of the batch in one buffer.

    torch hands each tensor of a batch to the main process through its own file descriptor and
    a socket round trip (~1 ms each here); with five tensors a batch that capped the main
    process at ~300 patches/s of 64^3, whatever the workers did. One shared buffer (plus small
    numpy arrays, pickled inline) costs one round trip; ``unpack_batch`` turns it back into
    the usual dict of tensors, as views without copies.
    """
    if get_worker_info() is None:
        return default_collate(items)
    big = [k for k, v in items[0].items() if isinstance(v, torch.Tensor) and v.numel() > 64]
    layout, nbytes = [], 0
    for k in big:
        t = items[0][k]
        shape = (len(items),) + tuple(t.shape)
        layout.append((k, t.dtype, shape, nbytes))
        nbytes += -(-int(np.prod(shape)) * t.element_size() // 64) * 64  # 64-byte aligned
    storage = torch.UntypedStorage._new_shared(max(nbytes, 1))  # what default_collate uses
    payload = torch.empty(0, dtype=torch.uint8).set_(storage)
    batch: dict[str, Any] = {"_packed": (payload, layout)}
    for k, dtype, shape, offset in layout:
        torch.stack([it[k] for it in items], out=_view(payload, dtype, shape, offset))
    for k in items[0]:
        if k not in big:
            batch[k] = np.stack([np.asarray(it[k]) for it in items])
    return batch


def _view(payload: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...],
          offset: int) -> torch.Tensor:
    n = int(np.prod(shape)) * dtype.itemsize
    return payload[offset:offset + n].view(dtype).view(shape)


def unpack_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The dict of tensors ``collate_patches`` packed (views of its buffer; no copies)."""
    if "_packed" not in batch:
        return batch
    payload, layout = batch.pop("_packed")
    out = {k: _view(payload, dtype, shape, offset) for k, dtype, shape, offset in layout}
    out |= {k: torch.from_numpy(v) for k, v in batch.items()}
    return out


class PatchLoader:
    """A DataLoader over a RowSampler, keeping hold of the strategy for feedback.

    Iterate it for batches; ``to_device(batch, device)`` moves one to the model's device
    (normalising the image there when the loader delivers the stored dtype); call
    ``strategy.update(batch["row"], losses)`` for hard-negative feedback; ``set_epoch`` to
    resume at an epoch.
    """

    def __init__(self, dataset: PatchDataset, sampler: RowSampler, loader: DataLoader,
                 normalizer: DeviceNormalizer | None = None,
                 device_transform: DeviceTransform | None = None) -> None:
        self.dataset, self.sampler, self.loader = dataset, sampler, loader
        self.strategy = sampler.strategy
        #: set when the image arrives in its stored dtype, to be normalised on the device
        self.normalizer = normalizer
        self.device_transform = device_transform

    def to_device(self, batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
        """The batch's patches (image, label, derived targets) on ``device`` (asynchronous
        from pinned memory; rows, seeds and corners stay on the CPU for the strategy), the
        image normalised there when the workers delivered its stored dtype, then
        ``device_transform(image, seeds)`` applied to it."""
        out = dict(batch)
        for role in self.dataset.roles:
            out[role] = batch[role].to(device, non_blocking=True)
        if self.normalizer is not None:
            out["image"] = self.normalizer(out["image"])
        if self.device_transform is not None:
            out["image"] = self.device_transform(out["image"], batch["seed"])
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return map(unpack_batch, self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


def _statistics(store: VolumeStore, index: PatchIndex, normalize: str
                ) -> dict[str, float] | None:
    """The pooled intensity statistics ``normalize`` needs (None if it needs none), after
    checking that every volume's image suits it."""
    if normalize == "unit":
        for vid in index.volume_ids:
            dtype = np.dtype(store.zarr_array(vid, "image").dtype)
            if dtype.kind not in "ui":
                raise ValueError(f"volume {vid}: normalize 'unit' needs an integer image, "
                                 f"this one is {dtype}; use 'zscore', 'ct' or 'window:LO,HI'")
    if not needs_statistics(normalize):
        return None
    stats = {vid: store.info(vid).intensity for vid in index.volume_ids}
    missing = [vid for vid, s in stats.items() if not s]
    if missing:
        raise ValueError(f"normalize {normalize!r} needs foreground intensity statistics, "
                         f"which volumes {missing[:5]} lack (registered volumes, or no "
                         "foreground voxels); use 'zscore' or 'window:LO,HI'")
    return pool_intensity([s for s in stats.values() if s])


def _chunk_bytes(store: VolumeStore, volume_id: str, role: str) -> int:
    arr = store.zarr_array(volume_id, role)
    return int(np.prod(arr.chunks)) * np.dtype(arr.dtype).itemsize


def make_loader(
    store: VolumeStore | str | os.PathLike[str],
    index: PatchIndex | str | os.PathLike[str],
    strategy: str | Strategy = "balanced",
    patch_size: int | tuple[int, int, int] | None = None,
    batch_size: int = 2,
    num_workers: int = 2,
    seed: int = 0,
    transforms: Callable[..., Any] | None = None,
    *,
    samples_per_epoch: int | None = None,
    roles: tuple[str, ...] | None = None,
    normalize: str = "zscore",
    normalize_on: str = "workers",
    device_transform: DeviceTransform | None = None,
    cache_bytes: int = 512 * 2**20,
    multiprocessing_context: str | None = None,
    rank: int = 0,
    world: int = 1,
    **strategy_kwargs: Any,
) -> PatchLoader:
    """A loader of patches chosen by ``strategy`` from ``index``, read from ``store``.

    Example:
        >>> loader = make_loader("data.zarr", "data.index.npz", "balanced", fg_share=0.5)
        >>> for batch in loader:                       # doctest: +SKIP
        ...     batch["image"].shape                   # (2, 1, 128, 128, 128)

    ``rank`` / ``world``: this process's share of one global stream in data-parallel training
    (see ``RowSampler``). ``roles`` defaults to image, label and the derived targets
    (``vesuvius-derive``) that every indexed volume has. ``normalize_on="device"``: workers
    hand over the image in its stored dtype and ``to_device`` normalises it on the device
    (then ``device_transform(image, seeds)``, each sample's randomness seeded by its item's
    seed); ``transforms`` then see the stored dtype, so keep them to geometry. Raises
    ValueError when ``patch_size`` differs from the index's, when the index is stale (a
    volume was rewritten since it was built) or missing from the store, and when the strategy
    has no candidate rows.
    """
    store = store if isinstance(store, VolumeStore) else VolumeStore.open(store)
    index = index if isinstance(index, PatchIndex) else PatchIndex.load(index)
    if patch_size is not None:
        ps = (patch_size,) * 3 if isinstance(patch_size, int) else tuple(patch_size)
        if ps != index.params.patch_size:
            raise ValueError(f"patch size {ps} differs from the index's "
                             f"{index.params.patch_size}; rebuild the index with "
                             f"vesuvius-index --patch-size {ps[0]}")
    for vid, meta in index.volumes.items():
        if vid not in store:
            raise ValueError(f"index volume {vid!r} is not in {store.location}; rebuild the "
                             "index (vesuvius-index)")
        gen = store.info(vid).generation
        if meta.get("generation") and gen != meta["generation"]:
            raise ValueError(f"stale index: volume {vid!r} was rewritten after the index was "
                             "built; rerun vesuvius-index (only changed volumes are re-read)")
    if roles is None:  # image, label and every derived target all volumes have
        derived = [set(store.info(v).derived) for v in index.volumes]
        roles = ("image", "label") + tuple(sorted(set.intersection(*derived)))
    if isinstance(strategy, str):
        strategy = make_strategy(strategy, index, **strategy_kwargs)
    elif strategy_kwargs:
        raise ValueError("strategy options apply only when the strategy is given by name")
    n = samples_per_epoch or len(strategy.candidates)
    # sorting 64 draws at a time lets consecutive batches share chunks: with a chunk cache far
    # smaller than the data, read amplification fell from 1.49 (16 draws) to 1.07 (64) here;
    # 256 gave 0.54 but strings batches from one region together
    sampler = RowSampler(strategy, n, seed=seed, window=max(32 * batch_size * world, 64),
                         rank=rank, world=world, batch_size=batch_size)
    shared = None
    if num_workers > 0:  # one budget and one copy of each chunk for all workers
        slot_bytes = {role: max(_chunk_bytes(store, vid, role) for vid in index.volume_ids)
                      for role in roles}
        shared = SharedChunkCache(index.volume_ids, slot_bytes, cache_bytes,
                                  multiprocessing_context)
    if device_transform is not None and normalize_on != "device":
        raise ValueError("device_transform runs after normalisation on the device: pass "
                         "normalize_on='device' with it, or put the transform in transforms")
    infos = [store.info(v) for v in index.volume_ids]
    statistics = _statistics(store, index, normalize)
    dataset = PatchDataset(store.location, index, roles=roles, normalize=normalize,
                           transforms=transforms, cache_bytes=cache_bytes, shared_cache=shared,
                           statistics=statistics, normalize_on=normalize_on,
                           spacing=[i.spacing or (1.0, 1.0, 1.0) for i in infos])
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                        num_workers=num_workers, persistent_workers=num_workers > 0,
                        multiprocessing_context=multiprocessing_context if num_workers else None,
                        collate_fn=collate_patches,
                        pin_memory=torch.cuda.is_available())
    normalizer = DeviceNormalizer(normalize, statistics) if normalize_on == "device" else None
    return PatchLoader(dataset, sampler, loader, normalizer, device_transform)
