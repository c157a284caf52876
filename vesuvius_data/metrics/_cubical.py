"""Cell indexing of the V-construction cubical complex of a block, shared by the topology kernels.

Voxel ``v = (x * ny + y) * nz + z``; edge ``3 v + t`` runs from voxel (x, y, z) one step along
axis t; face (square) ``3 v + t`` spans the two axes other than t from corner (x, y, z); cube
(x, y, z) spans one step along every axis, and ``cube_id`` maps anything outside the block to
one "outside" node. Ids grow in Betti-Matching-3D's tie order (x, y, z, type).
"""

from __future__ import annotations

import numba


@numba.njit(nogil=True, cache=True, inline="always")
def find(parent, i):
    """Union-find root of ``i`` (path halving)."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@numba.njit(nogil=True, cache=True, inline="always")
def edge_end(a, t, x, y, z, nx, ny, nz):
    """The voxel one step from voxel ``a`` = (x, y, z) along axis t, or -1 past the border."""
    if t == 0:
        return a + ny * nz if x + 1 < nx else -1
    if t == 1:
        return a + nz if y + 1 < ny else -1
    return a + 1 if z + 1 < nz else -1


@numba.njit(nogil=True, cache=True, inline="always")
def edge_id(x, y, z, axis, shift, ny, nz):
    """Id of the edge along ``axis`` starting one step along ``shift`` from (x, y, z)."""
    if shift == 0:
        x += 1
    elif shift == 1:
        y += 1
    else:
        z += 1
    return ((x * ny + y) * nz + z) * 3 + axis


@numba.njit(nogil=True, cache=True, inline="always")
def face_in_block(x, y, z, t, nx, ny, nz):
    """Does face (x, y, z, t) lie inside the block (its far corner too)?"""
    return (x + (0 if t == 0 else 1) < nx and y + (0 if t == 1 else 1) < ny
            and z + (0 if t == 2 else 1) < nz)


@numba.njit(nogil=True, cache=True, inline="always")
def square_in(fg, x, y, z, t):
    """Are all four voxels of face (x, y, z, t) foreground?"""
    for da in range(2):
        for db in range(2):
            if t == 0:
                v = fg[x, y + da, z + db]
            elif t == 1:
                v = fg[x + da, y, z + db]
            else:
                v = fg[x + da, y + db, z]
            if not v:
                return False
    return True


@numba.njit(nogil=True, cache=True, inline="always")
def face_edges(x, y, z, t, ny, nz):
    """The four edge ids of face (x, y, z, t), in descending order."""
    a_ax, b_ax = (1, 2) if t == 0 else ((0, 2) if t == 1 else (0, 1))
    base = (x * ny + y) * nz + z
    shifted_a = edge_id(x, y, z, a_ax, b_ax, ny, nz)  # along a, one step along b
    shifted_b = edge_id(x, y, z, b_ax, a_ax, ny, nz)  # along b, one step along a
    # the shifted edges start at a later voxel than the corner's two, and a < b
    return max(shifted_a, shifted_b), min(shifted_a, shifted_b), base * 3 + b_ax, base * 3 + a_ax


@numba.njit(nogil=True, cache=True, inline="always")
def cube_id(x, y, z, mx, my, mz):
    """Id of cube (x, y, z) among mx * my * mz cubes, or the outside node mx * my * mz."""
    if 0 <= x < mx and 0 <= y < my and 0 <= z < mz:
        return (x * my + y) * mz + z
    return mx * my * mz


@numba.njit(nogil=True, cache=True, inline="always")
def face_cubes(x, y, z, t, mx, my, mz):
    """The two cubes (or the outside) that face (x, y, z, t) separates, lower one first."""
    if t == 0:
        lower = cube_id(x - 1, y, z, mx, my, mz)
    elif t == 1:
        lower = cube_id(x, y - 1, z, mx, my, mz)
    else:
        lower = cube_id(x, y, z - 1, mx, my, mz)
    return lower, cube_id(x, y, z, mx, my, mz)
