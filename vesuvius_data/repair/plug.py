"""Pinhole plugging: a closing restricted to each sheet, kept only where it removes a loop."""

from __future__ import annotations

import cc3d
import numba
import numpy as np
from scipy import ndimage

from ..metrics.topology import octant_slices
from ._common import CUBE, MAX_ROUNDS, sheet_labels, tiles

__all__ = ["plug_pinholes"]


def plug_pinholes(mask: np.ndarray, octants: bool = True) -> np.ndarray:
    """Close one- and two-voxel tunnels through a sheet, never a dent, never between sheets.

    A closing with a 3x3x3 cube proposes voxels; they are grouped 26-connected, and a group is
    added only when (1) all foreground in the 3x3x3 neighbourhood of each of its voxels belongs
    to one 26-connected sheet (no bridges) and (2) it simplifies the topology as TopoScore
    counts it: it raises the Euler characteristic (closes a loop) or joins pieces of the sheet
    that are only 26-connected into one 6-connected component. Filling a dent does neither, so
    a clean sheet is returned unchanged. Repeated until nothing changes (idempotent).

    With ``octants`` (the default) topology is counted as TopoScore counts it, in each of the
    scorer's 2x2x2 octants on its own: there a sheet lying across an octant face is cut into
    one-voxel layers, and a dent next to the face is a tunnel through that layer.
    """
    mask = np.asarray(mask, bool)
    if not mask.any() or min(mask.shape) < 3:
        return mask
    closed = ndimage.binary_closing(np.pad(mask, 2), CUBE)[2:-2, 2:-2, 2:-2]
    for _ in range(MAX_ROUNDS):
        new = closed & ~mask
        if not new.any():
            break
        groups, n = ndimage.label(new, CUBE)
        cuts = _cuts(mask.shape, octants)
        gain, joins, bridging = _group_effects(
            mask, groups.astype(np.int32), n, sheet_labels(mask),
            _tile_components(mask, octants), cuts)
        accept = ((gain > 0) | joins) & ~bridging
        accept[0] = False
        if not accept.any():
            break
        mask = mask | accept[groups]
    return mask


def _cuts(shape: tuple[int, ...], octants: bool) -> np.ndarray:
    """Per axis, the first index of the second octant (-1: no cut)."""
    if not octants:
        return np.full(3, -1, np.int64)
    return np.array([octant_slices(shape)[-1][a].start if shape[a] > 1 else -1
                     for a in range(3)], np.int64)


def _tile_components(mask: np.ndarray, octants: bool) -> np.ndarray:
    """6-connected components of ``mask`` inside each tile, with labels unique over tiles."""
    comps = np.zeros(mask.shape, np.int32)
    offset = 0
    for tile in tiles(mask.shape, octants):
        lab, n = cc3d.connected_components(mask[tile], connectivity=6, return_N=True)
        comps[tile] = np.where(lab > 0, lab + offset, 0)
        offset += int(n)
    return comps


@numba.njit(nogil=True, cache=True)
def _group_effects(mask, groups, n, sheets, comps, cuts):
    """Per group of added voxels: (1) chi(mask + group) - chi(mask), summed over tiles, in the
    metric's cubical complex (a cell = the voxels a + d, d <= e, for an extent e in {0,1}^3;
    sign (-1)^|e|; cells across a tile cut do not exist); (2) whether it touches two 6-connected
    components of one tile; (3) whether any of its voxels sees two sheets in its 3x3x3
    neighbourhood. A new cell holds a new voxel, and is counted once, from its first new voxel;
    two groups never share a cell (they would be 26-adjacent)."""
    nx, ny, nz = mask.shape
    gain = np.zeros(n + 1, np.int64)
    first_comp = np.zeros((n + 1, 8), np.int64)  # per group and tile
    joins = np.zeros(n + 1, np.bool_)
    bridging = np.zeros(n + 1, np.bool_)
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                g = groups[x, y, z]
                if g == 0:
                    continue
                v = (x, y, z)
                tile = 0
                for ax in range(3):
                    tile = tile * 2 + (1 if cuts[ax] > 0 and v[ax] >= cuts[ax] else 0)
                seen = 0
                for dx in range(-1, 2):
                    for dy in range(-1, 2):
                        for dz in range(-1, 2):
                            a, b, c = x + dx, y + dy, z + dz
                            if a < 0 or b < 0 or c < 0 or a >= nx or b >= ny or c >= nz:
                                continue
                            s = sheets[a, b, c]
                            if s != 0:
                                if seen == 0:
                                    seen = s
                                elif s != seen:
                                    bridging[g] = True
                            if abs(dx) + abs(dy) + abs(dz) != 1:
                                continue
                            k = comps[a, b, c]
                            same_tile = True
                            for ax in range(3):
                                lo = min(v[ax], (a, b, c)[ax])
                                hi = max(v[ax], (a, b, c)[ax])
                                if cuts[ax] > 0 and lo < cuts[ax] <= hi:
                                    same_tile = False
                            if k == 0 or not same_tile:
                                continue
                            if first_comp[g, tile] == 0:
                                first_comp[g, tile] = k
                            elif first_comp[g, tile] != k:
                                joins[g] = True
                for e in range(8):
                    ex, ey, ez = e >> 2 & 1, e >> 1 & 1, e & 1
                    sign = 1 if (ex + ey + ez) % 2 == 0 else -1
                    for d in range(8):
                        ddx, ddy, ddz = d >> 2 & 1, d >> 1 & 1, d & 1
                        if ddx > ex or ddy > ey or ddz > ez:
                            continue
                        ax0, ay0, az0 = x - ddx, y - ddy, z - ddz
                        if ax0 < 0 or ay0 < 0 or az0 < 0 or ax0 + ex >= nx or \
                                ay0 + ey >= ny or az0 + ez >= nz:
                            continue
                        crosses = False
                        for ax, lo, ext in ((0, ax0, ex), (1, ay0, ey), (2, az0, ez)):
                            if ext and cuts[ax] == lo + 1:
                                crosses = True
                        if crosses:
                            continue
                        full = True
                        counted_before = False
                        for q in range(8):
                            qx, qy, qz = q >> 2 & 1, q >> 1 & 1, q & 1
                            if qx > ex or qy > ey or qz > ez:
                                continue
                            px, py, pz = ax0 + qx, ay0 + qy, az0 + qz
                            if not (mask[px, py, pz] or groups[px, py, pz] != 0):
                                full = False
                                break
                            if groups[px, py, pz] != 0 and (px, py, pz) < v:
                                counted_before = True
                        if full and not counted_before:
                            gain[g] += sign
    return gain, joins, bridging
