"""Scroll-scale prediction: a volume (or a region of it) predicted block by block into a
``VolumeStore``.

Memory is bounded by the block (256^3 by default: ~130 MB of float32 sums), not the volume:
each block reads only the windows that touch it and blends them with
``predict_volume(region=...)``, whose windows are the whole volume's, so the stitched result
equals whole-volume prediction. Blocks are multiples of the output chunks (no two blocks write
one chunk) and a block is marked in ``done`` (one chunk per block, so processes never write
the same file) only after its chunks are written: a killed run resumes where it stopped, and
processes (torchrun ranks, Dask tasks) each take every ``world``-th block.

The output is a volume of a ``VolumeStore``, published once its last block is written (by
whichever process writes it), so it can be indexed, evaluated and trained on like any other::

    OUT.zarr/volumes/{name}/image   the input region, copied (the volume stands on its own)
    OUT.zarr/volumes/{name}/label   uint8, p > threshold (0/1; a pseudo-label to train on)
    OUT.zarr/volumes/{name}/prob    uint8, round(255 p)  (decode with decode_probabilities)
    OUT.zarr/volumes/{name}/done    uint8 per block (1 = written)

Its chunks are not recorded for checked reads (that reads every chunk back; ``done`` is the
record at this scale).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import zarr
from zarr.errors import ContainsArrayError

from vesuvius_data.store import VolumeStore

from .inference import encode_probabilities, predict_volume

__all__ = ["predict_to_zarr", "parse_region"]

def parse_region(text: str | None, shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
    """``"z0:z1,y0:y1,x0:x1"`` (empty bounds allowed, like numpy) as slices inside ``shape``."""
    if not text:
        return tuple(slice(0, n) for n in shape)  # type: ignore[return-value]
    parts = text.split(",")
    if len(parts) != 3:
        raise ValueError(f"--region wants z0:z1,y0:y1,x0:x1, got {text!r}")
    out = []
    for part, n in zip(parts, shape, strict=True):
        a, sep, b = part.partition(":")
        try:
            lo, hi = int(a) if a.strip() else 0, int(b) if b.strip() else n
        except ValueError:
            raise ValueError(f"--region bounds must be integers, got {part!r}") from None
        if not sep or not 0 <= lo < hi <= n:
            raise ValueError(f"--region {part!r} is not a non-empty range inside 0:{n}")
        out.append(slice(lo, hi))
    return tuple(out)  # type: ignore[return-value]


def _arrays(store: VolumeStore, name: str, shape: tuple[int, ...], dtype: np.dtype,
            grid: tuple[int, ...]) -> dict[str, zarr.Array]:
    """The output arrays, created on first use and reused (resume) when their shape fits."""
    try:
        arrays = store.partial_arrays(name, shape, {"image": dtype, "label": np.uint8,
                                                    "prob": np.uint8})
    except ValueError as e:
        raise ValueError(f"{e}: a different region or volume; choose another output") from None
    vgroup = zarr.open_group(arrays["image"].store, path=arrays["image"].path.rpartition("/")[0],
                             mode="r+")
    if "done" in vgroup and tuple(vgroup["done"].shape) != grid:
        raise ValueError(f"{name}/done in {store.location} has {vgroup['done'].shape} blocks, "
                         f"this prediction needs {grid}: a different block size; use the same "
                         "--block to resume, or choose another output")
    try:
        arrays["done"] = vgroup.create_array("done", shape=grid, chunks=(1,) * len(grid),
                                             dtype=np.uint8, fill_value=0)
    except ContainsArrayError:  # resumed, or another process created it first
        arrays["done"] = vgroup["done"]
    return arrays


@torch.no_grad()
def predict_to_zarr(model: torch.nn.Module | list[torch.nn.Module], volume: Any,
                    store: VolumeStore, name: str,
                    patch: tuple[int, int, int], *, region: tuple[slice, ...] | None = None,
                    block: int = 256, overlap: float = 0.5, batch_size: int = 2,
                    tta: bool = False, threshold: float = 0.5, rank: int = 0, world: int = 1,
                    device: torch.device | str | None = None, source: str | None = None,
                    on_block: Callable[[int, int], Any] | None = None) -> int:
    """Predict ``region`` of ``volume`` (default all) into volume ``name`` of ``store``; this
    process takes blocks ``rank``, ``rank + world``, ... that are not done yet, and publishes
    the volume (``source``: where its input came from) when it finds every block done.
    Returns how many blocks it wrote; ``on_block(done, total)`` is called after each."""
    chunk = store.chunks[0]
    if block % chunk or len(set(store.chunks)) != 1:
        raise ValueError(f"block {block} must be a multiple of the output store's cubic "
                         f"chunks {store.chunks}")
    region = region or tuple(slice(0, n) for n in volume.shape)
    start = [s.start for s in region]
    shape = tuple(s.stop - s.start for s in region)
    grid = tuple(-(-n // block) for n in shape)
    if name in store:
        if store.info(name).shape != shape:
            raise ValueError(f"{name} in {store.location} is a finished prediction of shape "
                             f"{store.info(name).shape}, this one needs {shape}: a different "
                             "region or volume; choose another output")
        return 0  # finished and published: nothing to do
    arrays = _arrays(store, name, shape, np.dtype(volume.dtype), grid)
    done = arrays["done"][...]
    written = 0
    for i, ijk in enumerate(itertools.product(*(range(g) for g in grid))):
        if i % world != rank or done[ijk]:
            continue
        local = tuple(slice(k * block, min((k + 1) * block, n)) for k, n in zip(ijk, shape,
                                                                             strict=True))
        box = tuple(slice(s.start + a, s.stop + a) for s, a in zip(local, start, strict=True))
        prob = predict_volume(model, volume, patch, overlap=overlap, batch_size=batch_size,
                              tta=tta, device=device, region=box)
        arrays["image"][local] = np.asarray(volume[box])
        arrays["prob"][local] = encode_probabilities(prob, "uint8")
        arrays["label"][local] = (prob > threshold).astype(np.uint8)
        arrays["done"][ijk] = 1  # only now: a kill before this redoes the block
        written += 1
        if on_block is not None:
            on_block(written, int(np.prod(grid)))
    if arrays["done"][...].all() and name not in store:  # the other processes' blocks too
        store.publish(name, source=source, record=False)
    return written
