"""Loop generators of a foreground complex: one cycle per class of H1, as Seifert-strip entries.

The cycles are the fundamental cycles, in the complex's index-ordered spanning forest (Kruskal
over the edges in Betti-Matching-3D's order), of the loop births that no square kills. Which
births survive is decided by the scorer's own value-0 reduction of the squares in index order
(column = boundary, pivot = youngest edge), with the squares that close a 2-cycle cleared first:
those are the ones that join two parts in the dual union-find over the solid cubes and the
26-connected background components. One cycle per class is what keeps the dimension-1 sweep's
bit vectors short (the tests check the count equals b1).
"""

from __future__ import annotations

import cc3d
import numba
import numpy as np

from ._cubical import edge_end, face_cubes, face_edges, face_in_block, find, square_in

__all__ = ["LoopGenerators"]


class LoopGenerators:
    """A mask's loop generators as sparse Seifert-strip entries, sorted by x (descending).

    ``vox``/``kind``/``word``/``bits``: for every y-edge (kind 0) or z-edge (kind 1) of every
    generator's cycle, the bit of that generator; x-edges carry no strip.
    """

    def __init__(self, fg: np.ndarray):
        fg = np.ascontiguousarray(fg, dtype=np.bool_)
        flat = fg.ravel()  # here, not in the kernels: numba's ravel costs seconds to compile
        tree, closing = _kruskal(fg, flat)
        pivot = _reduce_squares(fg, flat, _positive_squares(fg))
        births = np.flatnonzero(closing & (pivot < 0))
        up, depth = _forest(fg, flat, tree)
        self.count = int(births.size)
        self.words = max(1, -(-self.count // 64))
        vox, kind, word, bits = _cycle_entries(fg.shape, births, up, depth)
        order = np.argsort(-(vox // (fg.shape[1] * fg.shape[2])), kind="stable")
        self.vox, self.kind = vox[order], kind[order]
        self.word, self.bits = word[order], bits[order]


@numba.njit(nogil=True, cache=True)
def _kruskal(fg, flat):
    """(tree edge flags, cycle-closing edge flags) of the edges in index order."""
    nx, ny, nz = fg.shape
    n = nx * ny * nz
    parent = np.arange(n, dtype=np.int64)
    tree = np.zeros(3 * n, np.bool_)
    closing = np.zeros(3 * n, np.bool_)
    for a in range(n):
        if not flat[a]:
            continue
        x, rem = divmod(a, ny * nz)
        y, z = divmod(rem, nz)
        for t in range(3):
            b = edge_end(a, t, x, y, z, nx, ny, nz)
            if b < 0 or not flat[b]:
                continue
            ra, rb = find(parent, a), find(parent, b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
                tree[3 * a + t] = True
            else:
                closing[3 * a + t] = True
    return tree, closing


def _positive_squares(fg: np.ndarray) -> np.ndarray:
    """Foreground squares that close a 2-cycle (their columns reduce to zero: cleared)."""
    bg_labels = cc3d.connected_components(~fg, connectivity=26)
    border = np.zeros(int(bg_labels.max()) + 1, np.bool_)
    for face in (bg_labels[0], bg_labels[-1], bg_labels[:, 0], bg_labels[:, -1],
                 bg_labels[:, :, 0], bg_labels[:, :, -1]):
        border[face] = True
    border[0] = False
    return _dual_merges(fg, bg_labels, border)


@numba.njit(nogil=True, cache=True)
def _dual_merges(fg, bg_labels, border_label):
    """Betti-Matching-3D's dual pass: faces in descending (value, index) order join cubes and the
    outside. The value-1 faces join every cube holding background into its 26-connected
    background component (the outside when that component reaches the border), so only the
    squares remain to replay, over those components and the cubes that are all foreground."""
    nx, ny, nz = fg.shape
    mx, my, mz = nx - 1, ny - 1, nz - 1
    n_bg = bg_labels.max()
    outside = n_bg + 1  # nodes: background labels 1..n_bg, outside, then solid cubes
    parent = np.arange(outside + 1 + mx * my * mz, dtype=np.int64)
    for lab in range(1, n_bg + 1):
        if border_label[lab]:
            parent[lab] = outside
    positive = np.zeros(3 * nx * ny * nz, np.bool_)
    for x in range(nx - 1, -1, -1):
        for y in range(ny - 1, -1, -1):
            for z in range(nz - 1, -1, -1):
                if not fg[x, y, z]:
                    continue
                for t in range(2, -1, -1):
                    if not face_in_block(x, y, z, t, nx, ny, nz) or not square_in(fg, x, y, z, t):
                        continue
                    ca, cb = face_cubes(x, y, z, t, mx, my, mz)
                    ra = find(parent, _node(fg, bg_labels, ca, outside))
                    rb = find(parent, _node(fg, bg_labels, cb, outside))
                    if ra != rb:
                        parent[min(ra, rb)] = max(ra, rb)
                        positive[((x * ny + y) * nz + z) * 3 + t] = True
    return positive


@numba.njit(nogil=True, cache=True, inline="always")
def _node(fg, bg_labels, cube, outside):
    """Union-find node of a cube: its background component, the outside, or itself if solid."""
    nx, ny, nz = fg.shape
    my, mz = ny - 1, nz - 1
    if cube == (nx - 1) * my * mz:
        return outside
    x, rem = divmod(cube, my * mz)
    y, z = divmod(rem, mz)
    for dx in range(2):
        for dy in range(2):
            for dz in range(2):
                lab = bg_labels[x + dx, y + dy, z + dz]
                if lab:
                    return lab
    return outside + 1 + cube


@numba.njit(nogil=True, cache=True)
def _reduce_squares(fg, flat, positive):
    """Z2 reduction of the foreground squares in index order; pivot[edge] = column or -1."""
    nx, ny, nz = fg.shape
    n = nx * ny * nz
    pivot = np.full(3 * n, -1, np.int64)
    starts = np.zeros(1024, np.int64)
    lengths = np.zeros(1024, np.int64)
    pool = np.zeros(4096, np.int64)
    used = n_cols = 0
    work = np.zeros(64, np.int64)
    other = np.zeros(64, np.int64)
    for a in range(n):
        if not flat[a]:
            continue
        x, rem = divmod(a, ny * nz)
        y, z = divmod(rem, nz)
        for t in range(3):
            if (positive[3 * a + t] or not face_in_block(x, y, z, t, nx, ny, nz)
                    or not square_in(fg, x, y, z, t)):
                continue
            work[0], work[1], work[2], work[3] = face_edges(x, y, z, t, ny, nz)
            m = 4
            while m > 0:
                col = pivot[work[0]]
                if col < 0:  # a new pivot: store the reduced column
                    if n_cols >= starts.size:
                        starts, lengths = _grow(starts), _grow(lengths)
                    while used + m > pool.size:
                        pool = _grow(pool)
                    _copy(work, pool, m, used)
                    starts[n_cols], lengths[n_cols] = used, m
                    pivot[work[0]] = n_cols
                    used += m
                    n_cols += 1
                    break
                ln = lengths[col]
                if other.size < m + ln:
                    other = np.zeros(2 * (m + ln), np.int64)
                m = _xor_sorted(work, m, pool[starts[col]:starts[col] + ln], other)
                if work.size < other.size:
                    work = np.zeros(other.size, np.int64)
                _copy(other, work, m, 0)
    return pivot


@numba.njit(nogil=True, cache=True)
def _xor_sorted(a, m, b, out):
    """Symmetric difference of a[:m] and b, both sorted descending, into out; its length."""
    i = j = k = 0
    while i < m or j < b.size:
        if j >= b.size or (i < m and a[i] > b[j]):
            out[k] = a[i]
            i += 1
            k += 1
        elif i >= m or b[j] > a[i]:
            out[k] = b[j]
            j += 1
            k += 1
        else:
            i += 1
            j += 1
    return k


@numba.njit(nogil=True, cache=True)
def _grow(a):
    b = np.zeros(2 * a.size, a.dtype)
    _copy(a, b, a.size, 0)
    return b


@numba.njit(nogil=True, cache=True)
def _copy(src, dst, n, at):
    """dst[at:at + n] = src[:n] as a loop: numba's slice assignment brings a shape-checking raise
    path that costs seconds of compilation on first use."""
    for i in range(n):
        dst[at + i] = src[i]


@numba.njit(nogil=True, cache=True)
def _forest(fg, flat, tree):
    """Parent voxel and depth in the spanning forest made of the tree edges (BFS)."""
    nx, ny, nz = fg.shape
    n = nx * ny * nz
    sx, sy = ny * nz, nz
    up = np.full(n, -1, np.int64)
    depth = np.zeros(n, np.int64)
    seen = np.zeros(n, np.bool_)
    queue = np.empty(n, np.int64)
    for s in range(n):
        if not flat[s] or seen[s]:
            continue
        seen[s] = True
        head, tail = 0, 1
        queue[0] = s
        while head < tail:
            v = queue[head]
            head += 1
            vx, rem = divmod(v, sx)
            vy, vz = divmod(rem, sy)
            for t in range(3):
                for sign in (-1, 1):
                    wx, wy, wz = vx, vy, vz
                    if t == 0:
                        wx += sign
                    elif t == 1:
                        wy += sign
                    else:
                        wz += sign
                    if not (0 <= wx < nx and 0 <= wy < ny and 0 <= wz < nz):
                        continue
                    w = wx * sx + wy * sy + wz
                    low = v if sign == 1 else w
                    if seen[w] or not tree[3 * low + t]:
                        continue
                    seen[w] = True
                    up[w] = v
                    depth[w] = depth[v] + 1
                    queue[tail] = w
                    tail += 1
    return up, depth


@numba.njit(nogil=True, cache=True)
def _cycle_entries(shape, gens, up, depth):
    """Sparse (voxel, kind, word, bits) entries of the y-edges (kind 0) and z-edges (kind 1) of
    each generator's fundamental cycle; x-edges carry no Seifert strip."""
    nx, ny, nz = shape
    sx, sy = ny * nz, nz
    vox = []
    kind = []
    word = []
    bits = []
    for j in range(gens.size):
        w, bit = j // 64, np.uint64(1) << np.uint64(j % 64)
        e = gens[j]
        a, t = e // 3, e % 3
        b = a + (sx if t == 0 else (sy if t == 1 else 1))
        _entry(a, b, w, bit, sx, sy, vox, kind, word, bits)
        u, v = a, b
        while u != v:  # walk both ends up to their common ancestor
            if depth[u] >= depth[v]:
                p = up[u]
                _entry(u, p, w, bit, sx, sy, vox, kind, word, bits)
                u = p
            else:
                p = up[v]
                _entry(v, p, w, bit, sx, sy, vox, kind, word, bits)
                v = p
    return (np.array(vox, dtype=np.int64), np.array(kind, dtype=np.int64),
            np.array(word, dtype=np.int64), np.array(bits, dtype=np.uint64))


@numba.njit(nogil=True, cache=True, inline="always")
def _entry(a, b, w, bit, sx, sy, vox, kind, word, bits):
    lo, hi = min(a, b), max(a, b)
    d = hi - lo
    if d == sx:
        return
    vox.append(lo)
    kind.append(0 if d == sy else 1)
    word.append(w)
    bits.append(bit)
