"""Scroll-scale prediction: a volume (or a region of it) predicted block by block into zarr.

Memory is bounded by the block (256^3 by default: ~130 MB of float32 sums), not the volume:
each block reads only the windows that touch it and blends them with
``predict_volume(region=...)``, whose windows are the whole volume's, so the stitched result
equals whole-volume prediction. Blocks are multiples of the output
chunks (no two blocks write one chunk) and a block is marked done in ``done`` only after its
chunks are written: a killed run resumes where it stopped, and processes (torchrun ranks, or
any launcher setting ``RANK`` / ``WORLD_SIZE``) each take every ``world``-th block.

Output group layout, per predicted volume ``name``::

    OUT.zarr/{name}/prob    uint8, round(255 p)   (decode with inference.decode_probabilities)
    OUT.zarr/{name}/mask    uint8, p > threshold
    OUT.zarr/{name}/done    uint8 per block (1 = written)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import zarr

from .inference import encode_probabilities, predict_volume

__all__ = ["predict_to_zarr", "parse_region"]

OUTPUT_CHUNK = 64


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


def _arrays(group: zarr.Group, name: str, shape: tuple[int, ...], grid: tuple[int, ...],
            chunk: int) -> dict[str, zarr.Array]:
    """The output arrays, created on first use and reused (resume) when their shape fits."""
    chunks = tuple(min(chunk, n) for n in shape)
    want = {"prob": (shape, chunks), "mask": (shape, chunks), "done": (grid, grid)}
    sub = group.require_group(name)
    out = {}
    for role, (shp, chk) in want.items():
        if role in sub:
            arr = sub[role]
            if tuple(arr.shape) != tuple(shp):
                raise ValueError(f"{name}/{role} in the output has shape {arr.shape}, this "
                                 f"prediction needs {shp}: a different region or volume; "
                                 "choose another output")
        else:
            arr = sub.create_array(role, shape=shp, chunks=chk, dtype=np.uint8, fill_value=0)
        out[role] = arr
    return out


@torch.no_grad()
def predict_to_zarr(model: torch.nn.Module, volume: Any, group: zarr.Group, name: str,
                    patch: tuple[int, int, int], *, region: tuple[slice, ...] | None = None,
                    block: int = 256, overlap: float = 0.5, batch_size: int = 2,
                    tta: bool = False, threshold: float = 0.5, rank: int = 0, world: int = 1,
                    device: torch.device | str | None = None,
                    on_block: Callable[[int, int], Any] | None = None) -> int:
    """Predict ``region`` of ``volume`` (default all) into ``group[name]``; this process takes
    blocks ``rank``, ``rank + world``, ... that are not done yet. Returns how many it wrote;
    ``on_block(done, total)`` is called after each."""
    chunk = min(OUTPUT_CHUNK, block)
    if block % chunk:
        raise ValueError(f"block {block} must be a multiple of the output chunk {chunk}")
    region = region or tuple(slice(0, n) for n in volume.shape)
    start = [s.start for s in region]
    shape = tuple(s.stop - s.start for s in region)
    grid = tuple(-(-n // block) for n in shape)
    arrays = _arrays(group, name, shape, grid, chunk)
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
        arrays["prob"][local] = encode_probabilities(prob, "uint8")
        arrays["mask"][local] = (prob > threshold).astype(np.uint8)
        arrays["done"][ijk] = 1  # only now: a kill before this redoes the block
        written += 1
        if on_block is not None:
            on_block(written, int(np.prod(grid)))
    return written
