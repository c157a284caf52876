"""Derived targets computed once per volume and stored beside the label.

- ``sdt``: signed Euclidean distance to the surface class, negative inside (distance to the
  nearest non-surface voxel), positive outside (distance to the nearest surface voxel),
  clipped to [-clip, clip]; float16. The boundary loss reads it.
- ``skeleton``: uint8, 1 on the medial surface of the sheets (surface voxels whose inside
  distance is a maximum among their 6 neighbours), 2 on the medial surface of the gaps between
  sheets (background voxels whose distance to the surface is such a maximum, within ``clip``),
  0 elsewhere. The connectivity loss reads it.

Both are computed chunk-wise with a halo of ``clip + 2`` voxels (dask ``overlap``): within
the halo every distance up to ``clip`` is exact, beyond it the clipped value is the same, so the
chunk-wise result equals the whole-volume one (``tests/test_derived.py``). EDT: the ``edt``
package, 7.5x faster than ``scipy.ndimage.distance_transform_edt`` on a 320^3 label (3.0 s vs
22.2 s for the two transforms, measured here) and equal to 1e-5.
"""

from __future__ import annotations

import math

import dask
import dask.array as da
import edt
import numpy as np
from scipy import ndimage

from .labels import LabelSpec

__all__ = ["signed_distance", "medial_skeleton", "derive_targets", "DERIVED_ROLES"]

DERIVED_ROLES = ("sdt", "skeleton")
_SIX = ndimage.generate_binary_structure(3, 1)


def _distance(mask: np.ndarray) -> np.ndarray:
    """Distance from each voxel of ``mask`` to the nearest voxel outside it (0 outside)."""
    if mask.all():
        return np.full(mask.shape, np.inf, np.float32)
    return edt.edt(np.ascontiguousarray(mask), black_border=False, parallel=1).astype(
        np.float32)


def _targets(label: np.ndarray, spec: LabelSpec, clip: float) -> tuple[np.ndarray, np.ndarray]:
    """Both targets from two distance transforms (inside and outside the surface)."""
    fg = label == spec.foreground
    inside, outside = _distance(fg), _distance(~fg)
    sdt = np.clip(np.where(fg, -inside, outside), -clip, clip).astype(np.float32)
    skeleton = np.zeros(label.shape, np.uint8)
    inside = np.minimum(inside, clip + 1)
    ridge = inside >= ndimage.maximum_filter(inside, footprint=_SIX, mode="nearest")
    skeleton[fg & ridge] = 1
    outside = np.minimum(outside, clip + 1)
    gap_ridge = outside >= ndimage.maximum_filter(outside, footprint=_SIX, mode="nearest")
    skeleton[(label == spec.background) & gap_ridge & (outside <= clip)] = 2
    return sdt, skeleton


def signed_distance(label: np.ndarray, spec: LabelSpec | None = None,
                    clip: float = 10.0) -> np.ndarray:
    """Clipped signed distance to the surface, float32 (see module docstring)."""
    return _targets(label, spec or LabelSpec(), clip)[0]


def medial_skeleton(label: np.ndarray, spec: LabelSpec | None = None,
                    clip: float = 10.0) -> np.ndarray:
    """1 = medial surface of the sheets, 2 = of the gaps between them (background only)."""
    return _targets(label, spec or LabelSpec(), clip)[1]


def _block(label: np.ndarray, trim: tuple[slice, ...], spec: LabelSpec,
           clip: float) -> tuple[np.ndarray, np.ndarray]:
    sdt, skeleton = _targets(label, spec, clip)
    return sdt[trim].astype(np.float16), skeleton[trim]


def _splits(n: int, step: int, depth: int) -> tuple[int, ...]:
    """Chunk sizes of ``step`` along n, none smaller than the halo (dask overlap needs that)."""
    step = max(step, depth)
    sizes = [min(step, n - s) for s in range(0, n, step)]
    if len(sizes) > 1 and sizes[-1] < depth:
        sizes[-2:] = [sizes[-2] + sizes[-1]]
    return tuple(sizes)


def derive_targets(label: da.Array, spec: LabelSpec | None = None, clip: float = 10.0,
                   block: tuple[int, int, int] = (128, 128, 128)) -> dict[str, da.Array]:
    """Lazy ``sdt`` (float16) and ``skeleton`` (uint8) of a label volume, chunked by ``block``.

    One task per block computes both from the same two distance transforms over the block
    and its halo of ``clip + 2`` voxels (dask overlap, no padding at the volume's faces).
    """
    spec = spec or LabelSpec()
    depth = int(math.ceil(clip)) + 2
    label = label.rechunk(tuple(_splits(n, b, depth) for n, b in zip(label.shape, block,
                                                                      strict=True)))
    padded = da.overlap.overlap(label, depth=depth, boundary="none")
    blocks = padded.to_delayed()
    sdt_blocks = np.empty(blocks.shape, object)
    skel_blocks = np.empty(blocks.shape, object)
    for ijk in np.ndindex(*blocks.shape):
        core = tuple(c[i] for c, i in zip(label.chunks, ijk, strict=True))
        lo = tuple(0 if i == 0 else depth for i in ijk)
        trim = tuple(slice(a, a + n) for a, n in zip(lo, core, strict=True))
        pair = dask.delayed(_block, nout=2, pure=True)(blocks[ijk], trim, spec, clip)
        sdt_blocks[ijk] = da.from_delayed(pair[0], core, np.float16)
        skel_blocks[ijk] = da.from_delayed(pair[1], core, np.uint8)
    return {"sdt": da.block(sdt_blocks.tolist()), "skeleton": da.block(skel_blocks.tolist())}
