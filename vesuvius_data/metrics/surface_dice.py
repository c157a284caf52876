"""Surface Dice at a tolerance, computed the way the competition scorer does, without an EDT.

The scorer (DeepMind's ``surface_distance``) places surface elements on the corners of the voxel
grid: each corner gets the 8-bit code of its 2x2x2 neighbourhood, corners whose code is neither 0
nor 255 are surface, and each carries the marching-cubes area of its code. Surface Dice is the
area of each surface lying within ``tau`` of the other surface over the total area of both.

The scorer finds "within tau" with a full Euclidean distance transform of the cropped grid. Only
the yes/no answer at ``tau`` matters, so here a corner asks whether any of the (33 at tau 2)
integer offsets no longer than ``tau`` holds a corner of the other surface. The offsets are
chosen with the same float expression the EDT uses, so the answer is the same; the tests compare
against ``surface_distance`` itself on random and hand-made masks. Areas are summed per code
(count x area), which keeps the float sum independent of the order of corners.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numba
import numpy as np

__all__ = ["surface_dice", "surface_area_table", "neighbour_codes"]


@lru_cache(maxsize=8)
def surface_area_table(spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Area of the surface element of each of the 256 2x2x2 neighbour codes (the scorer's table)."""
    from surface_distance import lookup_tables  # the scorer's own table; imported on first use

    table = np.asarray(lookup_tables.create_table_neighbour_code_to_surface_area(spacing),
                       dtype=np.float64)
    table.setflags(write=False)
    return table


@numba.njit(nogil=True, cache=True)
def _codes(mask: np.ndarray) -> np.ndarray:
    """Neighbour code of every grid corner: shape + 1 per axis, voxel (i-1, j-1, k-1) is bit 7.

    Matches ``scipy.ndimage.correlate(mask, [[[128, 64], [32, 16]], [[8, 4], [2, 1]]])`` on the
    scorer's zero-padded crop.
    """
    nx, ny, nz = mask.shape
    out = np.zeros((nx + 1, ny + 1, nz + 1), np.uint8)
    for i in range(nx):
        for j in range(ny):
            for k in range(nz):
                if mask[i, j, k]:
                    # voxel (i, j, k) is the (a, b, c) = (1, 1, 1) corner of code (i, j, k), ...
                    out[i, j, k] |= 1
                    out[i, j, k + 1] |= 2
                    out[i, j + 1, k] |= 4
                    out[i, j + 1, k + 1] |= 8
                    out[i + 1, j, k] |= 16
                    out[i + 1, j, k + 1] |= 32
                    out[i + 1, j + 1, k] |= 64
                    out[i + 1, j + 1, k + 1] |= 128
    return out


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """Public wrapper of the corner-code kernel (used by tests and the topology module)."""
    return _codes(np.ascontiguousarray(mask, dtype=np.bool_))


@numba.njit(nogil=True, cache=True)
def _touching_area_counts(codes_a, codes_b, offsets):
    """Per code of ``a``: how many surface corners of ``a`` have a ``b`` surface corner in reach.

    Returns (all surface corners of a per code, those in reach per code).
    """
    nx, ny, nz = codes_a.shape
    total = np.zeros(256, np.int64)
    near = np.zeros(256, np.int64)
    n_off = offsets.shape[0]
    for i in range(nx):
        for j in range(ny):
            for k in range(nz):
                c = codes_a[i, j, k]
                if c == 0 or c == 255:
                    continue
                total[c] += 1
                for o in range(n_off):
                    x = i + offsets[o, 0]
                    y = j + offsets[o, 1]
                    z = k + offsets[o, 2]
                    if 0 <= x < nx and 0 <= y < ny and 0 <= z < nz:
                        cb = codes_b[x, y, z]
                        if cb != 0 and cb != 255:
                            near[c] += 1
                            break
    return total, near


@lru_cache(maxsize=16)
def _offsets(tau: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """Integer offsets whose length (as the EDT computes it) is <= tau, nearest first."""
    reach = [int(np.floor(tau / s)) + 1 for s in spacing]
    grids = np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")
    d = np.stack([g.ravel() for g in grids], axis=1)
    length = np.sqrt(((d * np.asarray(spacing, np.float64)) ** 2).sum(axis=1))
    keep = length <= tau
    order = np.argsort(length[keep], kind="stable")  # near offsets first: earlier exits
    return np.ascontiguousarray(d[keep][order], dtype=np.int64)


def surface_dice(pred: np.ndarray, gt: np.ndarray, *, tau: float = 2.0,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """Surface Dice at tolerance ``tau`` of two boolean masks (both empty 1, one empty 0).

    Example:
        >>> gt = np.zeros((16, 16, 16), bool); gt[8] = True
        >>> surface_dice(np.roll(gt, 1, axis=0), gt)
        1.0
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"surface_dice needs two 3-D masks of one shape, got {pred.shape} "
                         f"and {gt.shape}")
    has_p, has_g = bool(pred.any()), bool(gt.any())
    if not has_p and not has_g:
        return 1.0
    if has_p != has_g:
        return 0.0
    spacing = tuple(float(s) for s in spacing)
    table = surface_area_table(spacing)
    offsets = _offsets(float(tau), spacing)
    box = _union_box(pred | gt)
    cp, cg = neighbour_codes(pred[box]), neighbour_codes(gt[box])
    g_total, g_near = _touching_area_counts(cg, cp, offsets)
    p_total, p_near = _touching_area_counts(cp, cg, offsets)
    overlap = g_near @ table + p_near @ table
    return float(overlap / (g_total @ table + p_total @ table))


def _union_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Bounding box of the foreground (as slices), widened by ``margin`` within the array."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin,
                                                             mask.shape[axis])))
    return tuple(box)
