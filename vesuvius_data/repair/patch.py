"""Per-sheet hole patching: interpolate a sheet's height across small holes of its projection,
guarded against merges and against patches that do not remove a loop."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..metrics.topology import betti_numbers
from ._common import CUBE, sheet_labels, tiles

__all__ = ["patch_sheet_holes"]


def patch_sheet_holes(mask: np.ndarray, max_area: int, *, min_sheet: int = 64,
                      octants: bool = True) -> np.ndarray:
    """Patch holes of at most ``max_area`` projected pixels in every sheet (see module doc).

    Sheets are 26-connected components of at least ``min_sheet`` voxels. With ``octants``,
    loops are counted per scorer octant, as TopoScore counts them.
    """
    mask = np.asarray(mask, bool)
    if max_area <= 0 or not mask.any() or min(mask.shape) < 3:
        return mask
    out = mask.copy()
    labels = sheet_labels(mask)
    boxes = tiles(mask.shape, octants)
    sizes = np.bincount(labels.ravel())
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or sizes[k] < max(min_sheet, 1):
            continue
        for voxels in _sheet_patches(labels, k, box, max_area):
            if _patch_is_safe(out, labels, k, voxels, boxes):
                out[voxels] = True
    return out


def _sheet_patches(labels: np.ndarray, k: int, box: tuple[slice, ...], max_area: int):
    """Candidate patches (voxel index tuples, whole-volume coordinates) for sheet ``k``."""
    sheet = labels[box] == k
    axis = int(np.argmax([sheet.any(axis=a).sum() for a in range(3)]))  # thinnest direction
    s = np.moveaxis(sheet, axis, 0)
    covered = s.any(axis=0)
    if covered.sum() < 4:
        return
    holes = ndimage.binary_fill_holes(covered) & ~covered
    hole_labels, n = ndimage.label(holes)
    if not n:
        return
    areas = np.bincount(hole_labels.ravel(), minlength=n + 1)
    depth = np.arange(s.shape[0], dtype=np.float64)[:, None, None]
    count = s.sum(axis=0)
    height = np.where(covered, (s * depth).sum(axis=0) / np.maximum(count, 1), np.nan)
    first = np.where(covered, s.argmax(axis=0), 0)
    last = np.where(covered, s.shape[0] - 1 - s[::-1].argmax(axis=0), 0)
    span = last - first + 1
    thickness = max(int(np.median(count[covered])), 1)
    origin = [sl.start for sl in box]
    others = [a for a in range(3) if a != axis]
    for h, window in enumerate(ndimage.find_objects(hole_labels), start=1):
        if window is None or areas[h] > max_area:
            continue
        # work in the hole's window, grown by 2 so the rim is inside it
        win = tuple(slice(max(w.start - 2, 0), w.stop + 2) for w in window)
        hole = hole_labels[win] == h
        rim = ndimage.binary_dilation(hole, np.ones((3, 3), bool)) & covered[win]
        # a rim where the projection holds more than one layer (a fold, or two sheets that
        # touch) has no single height to interpolate
        if not rim.any() or span[win][rim].max() > thickness + 2:
            continue
        filled = _interpolate_height(height[win], hole, rim)
        u, v = np.nonzero(hole)
        low = np.rint(filled[u, v] - (thickness - 1) / 2).astype(np.int64)
        d = (low[:, None] + np.arange(thickness)[None]).ravel()
        u = np.repeat(u + win[0].start, thickness)
        v = np.repeat(v + win[1].start, thickness)
        inside = (d >= 0) & (d < s.shape[0])
        local = [np.empty(0, np.int64)] * 3
        local[axis] = d[inside]
        local[others[0]], local[others[1]] = u[inside], v[inside]
        yield tuple(local[a] + origin[a] for a in range(3))


def _interpolate_height(height: np.ndarray, hole: np.ndarray, rim: np.ndarray) -> np.ndarray:
    """The sheet's height over ``hole``: harmonic fill from the rim (Jacobi iterations started
    from the nearest rim height), so patches follow the sheet's slope."""
    known = rim
    idx = ndimage.distance_transform_edt(~known, return_distances=False, return_indices=True)
    h = np.where(known, height, height[tuple(idx)])
    grow = hole | known
    padded_hole = np.pad(hole, 1)
    for _ in range(max(8, int(np.sqrt(hole.sum())) * 4)):
        p = np.pad(np.where(grow, h, 0.0), 1)
        w = np.pad(grow.astype(np.float64), 1)
        total = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]
        weight = w[:-2, 1:-1] + w[2:, 1:-1] + w[1:-1, :-2] + w[1:-1, 2:]
        mean = total / np.maximum(weight, 1)
        h = np.where(padded_hole[1:-1, 1:-1], mean, h)
    return h


def _patch_is_safe(mask: np.ndarray, labels: np.ndarray, k: int, voxels,
                   tile_boxes: list[tuple[slice, ...]]) -> bool:
    """No voxel of the patch within one voxel of another sheet, and fewer loops around it
    (counted in the part of each tile that the neighbourhood covers)."""
    if voxels[0].size == 0:
        return False
    lo = [max(int(v.min()) - 2, 0) for v in voxels]
    hi = [min(int(v.max()) + 3, n) for v, n in zip(voxels, mask.shape, strict=True)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    local = tuple(v - a for v, a in zip(voxels, lo, strict=True))
    near = labels[box]
    other = (near != 0) & (near != k)
    if other.any() and ndimage.binary_dilation(other, CUBE)[local].any():
        return False
    loops_before = loops_after = 0
    for tile in tile_boxes:
        part = tuple(slice(max(b.start, t.start), min(b.stop, t.stop))
                     for b, t in zip(box, tile, strict=True))
        if any(p.stop <= p.start for p in part):
            continue
        before = mask[part]
        changed = before.copy()
        inside = np.all([(v >= p.start) & (v < p.stop) for v, p in
                         zip(voxels, part, strict=True)], axis=0)
        changed[tuple(v[inside] - p.start for v, p in zip(voxels, part, strict=True))] = True
        loops_before += betti_numbers(before)[1]
        loops_after += betti_numbers(changed)[1]
    return loops_after < loops_before
