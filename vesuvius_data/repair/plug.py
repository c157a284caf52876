"""Pinhole plugging: a closing restricted to each sheet, kept only where it removes a loop."""

from __future__ import annotations

import cc3d
import numba
import numpy as np
from scipy import ndimage

from ..metrics.topology import octant_slices
from ._common import CUBE, MAX_ROUNDS, sheet_labels, tiles

__all__ = ["plug_pinholes", "MAX_PLUG"]

#: largest group of voxels one plug may add: a 2x2 hole through a 3-voxel sheet is 12
MAX_PLUG = 16


def plug_pinholes(mask: np.ndarray, octants: bool = True) -> np.ndarray:
    """Close one- and two-voxel tunnels through a sheet, never a dent, never between sheets.

    A closing with a 3x3x3 cube proposes voxels; they are grouped 26-connected, and a group is
    added only when (1) all foreground in the 3x3x3 neighbourhood of each of its voxels belongs
    to one 26-connected sheet (no bridges) and (2) it simplifies the topology as TopoScore
    counts it: fewer loops or fewer 6-connected components, and more of neither. A group's
    effect on the components is k - 1 merges (k = the distinct components it touches, taking
    the groups accepted before it into account with a union-find, so two groups never close a
    new loop between the same two pieces); on the loops it is b0 change - Euler gain. Filling
    a dent changes neither, so a clean sheet is returned unchanged. Repeated until nothing
    changes (idempotent).

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
        groups = groups.astype(np.int32)
        cuts = _cuts(mask.shape, octants)
        comps = _tile_components(mask, octants)
        gain, bridging = _group_effects(mask, groups, n, sheet_labels(mask), cuts)
        sizes = np.bincount(groups.ravel(), minlength=n + 1)
        accept = _select(gain, bridging, *_touches(groups, comps, cuts), sizes, n)
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


def _tile_ids(shape: tuple[int, ...], cuts: np.ndarray) -> np.ndarray:
    """Octant index (0-7) of every voxel; 0 everywhere without cuts."""
    ids = np.zeros(shape, np.int8)
    for axis in range(3):
        if cuts[axis] > 0:
            side = (np.arange(shape[axis]) >= cuts[axis]).astype(np.int8)
            ids += side.reshape([-1 if a == axis else 1 for a in range(3)]) * (4 >> axis)
    return ids


def _touches(groups: np.ndarray, comps: np.ndarray, cuts: np.ndarray):
    """(group, component) pairs where a group voxel is 6-adjacent to a component voxel of its
    own tile, and (group, tile) pairs of the tiles each group has voxels in."""
    where = np.nonzero(groups)
    g = groups[where]
    tile_of = _tile_ids(groups.shape, cuts)
    tiles = tile_of[where]
    padded = np.pad(comps, 1)
    padded_tiles = np.pad(tile_of, 1, constant_values=-1)
    width = int(comps.max()) + 1
    keys = [np.zeros(0, np.int64)]
    for axis in range(3):
        for step in (-1, 1):
            idx = [c + 1 for c in where]
            idx[axis] = idx[axis] + step
            c, t = padded[tuple(idx)], padded_tiles[tuple(idx)]
            ok = (c > 0) & (t == tiles)
            keys.append(g[ok].astype(np.int64) * width + c[ok])
    # pairs as one int64 key each: a 1-D unique sorts far faster than rows
    key = np.unique(np.concatenate(keys))
    group_comp = np.stack([key // width, key % width], axis=1)
    tile_key = np.unique(g.astype(np.int64) * 8 + tiles)
    group_tile = np.stack([tile_key // 8, tile_key % 8], axis=1)
    return group_comp, group_tile


def _select(gain: np.ndarray, bridging: np.ndarray, group_comp: np.ndarray,
            group_tile: np.ndarray, sizes: np.ndarray, n: int) -> np.ndarray:
    """Groups to add, in label order: no bridge, no new loop or component, one fewer of either,
    and no more than ``MAX_PLUG`` voxels (a pinhole is small; a larger group closes a real
    tunnel between two sheets that touch, which the label has too).

    In each tile a group merges (k - 1) pieces, k = the distinct pieces (after the groups
    accepted so far) it touches there, or is a new piece (k = 0): components change by the sum
    of 1 - k, loops by that minus the Euler gain.
    """
    parent = np.arange(int(group_comp[:, 1].max(initial=0)) + 1)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    comps_of = np.split(group_comp[:, 1], np.searchsorted(group_comp[:, 0], np.arange(1, n + 1)))
    tiles_of = np.bincount(group_tile[:, 0], minlength=n + 1)
    accept = np.zeros(n + 1, bool)
    for g in range(1, n + 1):
        if bridging[g] or sizes[g] > MAX_PLUG:
            continue
        roots = {find(int(c)) for c in comps_of[g]}
        d_b0 = int(tiles_of[g]) - len(roots)  # each tile: 1 - k (pieces are unique per tile)
        d_b1 = d_b0 - int(gain[g])
        if d_b0 <= 0 and d_b1 <= 0 and (d_b0 < 0 or d_b1 < 0):
            accept[g] = True
            roots = sorted(roots)
            for r in roots[1:]:
                parent[r] = roots[0]
    return accept


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
def _group_effects(mask, groups, n, sheets, cuts):
    """Per group of added voxels: (1) chi(mask + group) - chi(mask), summed over tiles, in the
    metric's cubical complex (a cell = the voxels a + d, d <= e, for an extent e in {0,1}^3;
    sign (-1)^|e|; cells across a tile cut do not exist); (2) whether its voxels see two
    sheets in their 3x3x3 neighbourhoods. A new cell holds a new voxel, and is counted once,
    from its first new voxel; two groups never share a cell (they would be 26-adjacent)."""
    nx, ny, nz = mask.shape
    gain = np.zeros(n + 1, np.int64)
    bridging = np.zeros(n + 1, np.bool_)
    group_sheet = np.zeros(n + 1, np.int64)  # the one sheet each group may touch
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                g = groups[x, y, z]
                if g == 0:
                    continue
                v = (x, y, z)
                for dx in range(-1, 2):
                    for dy in range(-1, 2):
                        for dz in range(-1, 2):
                            a, b, c = x + dx, y + dy, z + dz
                            if a < 0 or b < 0 or c < 0 or a >= nx or b >= ny or c >= nz:
                                continue
                            s = sheets[a, b, c]
                            if s != 0:
                                if group_sheet[g] == 0:
                                    group_sheet[g] = s
                                elif s != group_sheet[g]:
                                    bridging[g] = True
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
    return gain, bridging
