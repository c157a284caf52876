"""Dimension-1 Betti matching of two binary masks by linking numbers, without matrix reductions.

Betti-Matching-3D matches a loop of the union (comparison image) when the face that fills it,
in the union's order (value, then x, y, z, type), has image-reduction pivots that are loop
births of the prediction and of the ground truth. A reduced column's pivot is the lowest one
reachable, so that condition reads: the class filled by face ``d`` lies, just before ``d``, in
the image of H1(prediction) and in the image of H1(ground truth). Alexander duality turns this
into linking numbers with cycles of the dual graph (cubes and the outside, joined through the
faces not yet added):

- walk the union's value-1 faces in reverse order with a union-find over cubes; a face that
  closes a dual cycle ``gamma_d`` is, forwards, a face that fills a loop;
- the class it fills is in the image of H1(K) exactly when the vector of linking numbers of
  ``gamma_d`` with a generating set of K's loops is independent of those of the dual cycles
  closed before it (a small Z2 echelon basis per mask);
- linking numbers are parities of ``gamma_d`` crossing Seifert surfaces of K's loops, built
  by prefix XORs along x (and along y in the plane x = 0), and carried through the union-find as
  bit vectors, like a weighted union-find.

K's loops: the fundamental cycles, in its index-ordered spanning forest, of the loop births that
no square kills, one per class of H1(K). They come from the scorer's own value-0 reduction of
K's squares in index order, with the squares that close a 2-cycle cleared first (a union-find
over K's solid cubes and its 26-connected background components). ``tests/betti_reference.py``
replays the scorer's three reductions literally; the tests check this module against it.

Why the reverse sweep is enough: the faces not yet added form a graph (cubes and the outside as
nodes), which by Alexander duality carries H1 of what has been added; a face closing a cycle in
that graph is, forwards, a face that fills a loop, and whether the filled class comes from K is
whether the cycle's linking vector with K's loops is new among the cycles of the faces after it.
"""

from __future__ import annotations

import cc3d
import numba
import numpy as np


@numba.njit(nogil=True, cache=True, inline="always")
def _root(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@numba.njit(nogil=True, cache=True, inline="always")
def _face_edges(x, y, z, t, ny, nz):
    """The four edge ids of face (x, y, z, t), which spans the two axes other than t."""
    a_ax, b_ax = (1, 2) if t == 0 else ((0, 2) if t == 1 else (0, 1))
    base = (x * ny + y) * nz + z
    e0 = base * 3 + a_ax
    e1 = base * 3 + b_ax
    e2 = _edge_id(x, y, z, a_ax, b_ax, ny, nz)
    e3 = _edge_id(x, y, z, b_ax, a_ax, ny, nz)
    return e0, e1, e2, e3


@numba.njit(nogil=True, cache=True)
def _positive_squares(fg, bg_labels, border_label):
    """Foreground squares that close a 2-cycle (their columns reduce to zero: cleared).

    Betti-Matching-3D's dual pass: faces in descending (value, index) order join cubes and the
    outside. The value-1 faces join every cube holding background into its 26-connected
    background component (the outside when that component reaches the border), so only the
    squares remain to replay, in descending index order, over those components and the cubes
    that are all foreground. A square that joins two parts is positive.
    """
    nx, ny, nz = fg.shape
    mx, my, mz = nx - 1, ny - 1, nz - 1
    n_bg = bg_labels.max()
    outside = n_bg + 1  # nodes: background labels 1..n_bg, outside, then solid cubes
    n_nodes = outside + 1 + mx * my * mz
    parent = np.arange(n_nodes, dtype=np.int64)
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
                    ex = x + (0 if t == 0 else 1)
                    ey = y + (0 if t == 1 else 1)
                    ez = z + (0 if t == 2 else 1)
                    if ex >= nx or ey >= ny or ez >= nz or not _square_in(fg, x, y, z, t):
                        continue
                    if t == 0:
                        a = _cube_node(fg, bg_labels, x - 1, y, z, outside)
                    elif t == 1:
                        a = _cube_node(fg, bg_labels, x, y - 1, z, outside)
                    else:
                        a = _cube_node(fg, bg_labels, x, y, z - 1, outside)
                    b = _cube_node(fg, bg_labels, x, y, z, outside)
                    ra, rb = _root(parent, a), _root(parent, b)
                    if ra != rb:
                        parent[min(ra, rb)] = max(ra, rb)
                        positive[((x * ny + y) * nz + z) * 3 + t] = True
    return positive


@numba.njit(nogil=True, cache=True, inline="always")
def _cube_node(fg, bg_labels, x, y, z, outside):
    nx, ny, nz = fg.shape
    if not (0 <= x < nx - 1 and 0 <= y < ny - 1 and 0 <= z < nz - 1):
        return outside
    for dx in range(2):
        for dy in range(2):
            for dz in range(2):
                lab = bg_labels[x + dx, y + dy, z + dz]
                if lab:
                    return lab
    return outside + 1 + ((x * (ny - 1) + y) * (nz - 1) + z)


@numba.njit(nogil=True, cache=True)
def _essential_cycles(fg, positive):
    """Loop generators of the foreground complex, one per essential class.

    Edges in index order build a spanning forest (Kruskal); an edge that closes a cycle is a
    loop birth unless a square kills it: the squares, in index order, are reduced over Z2
    (column = boundary, pivot = youngest edge), as the scorer's input reduction does at value 0.
    Returns (essential edge ids, forest parent voxel, depth).
    """
    nx, ny, nz = fg.shape
    n = nx * ny * nz
    sx, sy = ny * nz, nz
    flat = fg.ravel()
    parent = np.arange(n, dtype=np.int64)
    tree = np.zeros(3 * n, np.bool_)
    closing = np.zeros(3 * n, np.bool_)
    for a in range(n):
        if not flat[a]:
            continue
        x, rem = divmod(a, sx)
        y, z = divmod(rem, sy)
        for t in range(3):
            if t == 0:
                if x + 1 >= nx:
                    continue
                b = a + sx
            elif t == 1:
                if y + 1 >= ny:
                    continue
                b = a + sy
            else:
                if z + 1 >= nz:
                    continue
                b = a + 1
            if not flat[b]:
                continue
            ra, rb = _root(parent, a), _root(parent, b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
                tree[3 * a + t] = True
            else:
                closing[3 * a + t] = True
    # reduce the foreground squares in index order; pivot[edge] = stored column
    pivot = np.full(3 * n, -1, np.int64)
    starts = np.zeros(1024, np.int64)
    lengths = np.zeros(1024, np.int64)
    pool = np.zeros(4096, np.int64)
    used = 0
    n_cols = 0
    work = np.zeros(64, np.int64)
    other = np.zeros(64, np.int64)
    for a in range(n):
        if not flat[a]:
            continue
        x, rem = divmod(a, sx)
        y, z = divmod(rem, sy)
        for t in range(3):
            ex = x + (0 if t == 0 else 1)
            ey = y + (0 if t == 1 else 1)
            ez = z + (0 if t == 2 else 1)
            if ex >= nx or ey >= ny or ez >= nz:
                continue
            if positive[3 * a + t] or not _square_in(fg, x, y, z, t):
                continue
            e0, e1, e2, e3 = _face_edges(x, y, z, t, ny, nz)
            m = 4
            # e0 < e1 (same corner, axes a < b); e2, e3 shifted: sort the four descending
            hi_a, hi_b = max(e2, e3), min(e2, e3)
            work[0], work[1], work[2], work[3] = hi_a, hi_b, e1, e0
            if work[1] < work[2]:  # a shifted edge below the corner's b edge cannot happen,
                work[1], work[2] = work[2], work[1]  # but keep the order exact regardless
            while m > 0:
                low = work[0]
                col = pivot[low]
                if col < 0:
                    # store the reduced column
                    if n_cols >= starts.size:
                        starts = _grow(starts)
                        lengths = _grow(lengths)
                    while used + m > pool.size:
                        pool = _grow(pool)
                    pool[used:used + m] = work[:m]
                    starts[n_cols] = used
                    lengths[n_cols] = m
                    used += m
                    pivot[low] = n_cols
                    n_cols += 1
                    break
                # work ^= stored column (both sorted descending)
                st, ln = starts[col], lengths[col]
                if other.size < m + ln:
                    other = np.zeros(2 * (m + ln), np.int64)
                i = j = k = 0
                while i < m or j < ln:
                    if j >= ln or (i < m and work[i] > pool[st + j]):
                        other[k] = work[i]
                        i += 1
                        k += 1
                    elif i >= m or pool[st + j] > work[i]:
                        other[k] = pool[st + j]
                        j += 1
                        k += 1
                    else:
                        i += 1
                        j += 1
                if work.size < other.size:
                    work = np.zeros(other.size, np.int64)
                work[:k] = other[:k]
                m = k
    count = 0
    for e in range(3 * n):
        if closing[e] and pivot[e] < 0:
            count += 1
    essential = np.empty(count, np.int64)
    count = 0
    for e in range(3 * n):
        if closing[e] and pivot[e] < 0:
            essential[count] = e
            count += 1
    up, depth = _forest(fg, tree)
    return essential, up, depth


@numba.njit(nogil=True, cache=True)
def _grow(a):
    b = np.zeros(2 * a.size, a.dtype)
    b[:a.size] = a
    return b


@numba.njit(nogil=True, cache=True, inline="always")
def _square_in(fg, x, y, z, t):
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


@numba.njit(nogil=True, cache=True)
def _forest(fg, tree):
    """Parent voxel and depth in the spanning forest made of the tree edges (BFS)."""
    nx, ny, nz = fg.shape
    n = nx * ny * nz
    sx, sy = ny * nz, nz
    flat = fg.ravel()
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


@numba.njit(nogil=True, cache=True, inline="always")
def _edge_id(x, y, z, axis, shift, ny, nz):
    if shift == 0:
        x += 1
    elif shift == 1:
        y += 1
    else:
        z += 1
    return ((x * ny + y) * nz + z) * 3 + axis


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


class _Generators:
    """A mask's loop generators as sparse Seifert-strip entries, sorted by x (descending)."""

    def __init__(self, fg: np.ndarray):
        fg = np.ascontiguousarray(fg, dtype=np.bool_)
        bg_labels = cc3d.connected_components(~fg, connectivity=26)
        border = np.zeros(int(bg_labels.max()) + 1, np.bool_)
        for face in (bg_labels[0], bg_labels[-1], bg_labels[:, 0], bg_labels[:, -1],
                     bg_labels[:, :, 0], bg_labels[:, :, -1]):
            border[face] = True
        border[0] = False
        positive = _positive_squares(fg, bg_labels, border)
        gens, up, depth = _essential_cycles(fg, positive)
        self.count = int(gens.size)
        self.words = max(1, -(-self.count // 64))
        vox, kind, word, bits = _cycle_entries(fg.shape, gens, up, depth)
        sx = fg.shape[1] * fg.shape[2]
        order = np.argsort(-(vox // sx), kind="stable")
        self.vox, self.kind = vox[order], kind[order]
        self.word, self.bits = word[order], bits[order]


@numba.njit(nogil=True, cache=True)
def _insert(basis, pivot_row, rank, vec):
    """Reduce ``vec`` by the echelon basis; add it when independent. Returns (independent, rank)."""
    words = vec.size
    v = vec.copy()
    while True:
        hb = -1
        for w in range(words - 1, -1, -1):
            if v[w] != 0:
                x = v[w]
                k = 63
                while (x >> np.uint64(k)) & np.uint64(1) == 0:
                    k -= 1
                hb = w * 64 + k
                break
        if hb < 0:
            return False, rank
        row = pivot_row[hb]
        if row < 0:
            basis[rank] = v
            pivot_row[hb] = rank
            return True, rank + 1
        for w in range(words):
            v[w] ^= basis[row, w]


@numba.njit(nogil=True, cache=True)
def _plane(ny, nz, words, vox, kind, word, bits, sy):
    """Seifert parity of the type-0 faces in the plane x = 0: the projected z-edges above in y."""
    proj = np.zeros((ny, nz, words), np.uint64)
    for i in range(vox.size):
        if kind[i] == 1:
            rem = vox[i] % (ny * nz)
            proj[rem // sy, rem % sy, word[i]] ^= bits[i]
    out = np.zeros((ny, nz, words), np.uint64)
    for z in range(nz):
        for w in range(words):
            acc = np.uint64(0)
            for y in range(ny - 1, -1, -1):
                out[y, z, w] = acc
                acc ^= proj[y, z, w]
    return out


@numba.njit(nogil=True, cache=True)
def _absorb(x, sx, sy, vox, kind, word, bits, start, acc_y, acc_z, offset):
    """Add the strips of the cycle edges in slab x (entries sorted by x, descending)."""
    i = start
    while i < vox.size and vox[i] // sx == x:
        rem = vox[i] % sx
        y, z = rem // sy, rem % sy
        if kind[i] == 0:
            acc_y[y, z, offset + word[i]] ^= bits[i]
        else:
            acc_z[y, z, offset + word[i]] ^= bits[i]
        i += 1
    return i


@numba.njit(nogil=True, cache=True)
def _sweep(union, n0, w0, vox0, kind0, word0, bits0, n1, w1, vox1, kind1, word1, bits1):
    """Reverse sweep of the union's value-1 faces over the dual graph; counts faces whose
    linking vectors are new for both masks. Potentials of both masks share one row per node
    (words 0..w0-1 for the prediction, w0.. for the ground truth)."""
    nx, ny, nz = union.shape
    sx, sy = ny * nz, nz
    mx, my, mz = nx - 1, ny - 1, nz - 1
    outside = mx * my * mz
    W = w0 + w1
    parent = np.arange(outside + 1, dtype=np.int32)
    pot = np.zeros((outside + 1, W), np.uint64)
    basis0 = np.zeros((max(n0, 1), w0), np.uint64)
    basis1 = np.zeros((max(n1, 1), w1), np.uint64)
    piv0 = np.full(w0 * 64, -1, np.int64)
    piv1 = np.full(w1 * 64, -1, np.int64)
    accy = np.zeros((ny, nz, W), np.uint64)
    accz = np.zeros((ny, nz, W), np.uint64)
    plane = np.zeros((ny, nz, W), np.uint64)
    plane[:, :, :w0] = _plane(ny, nz, w0, vox0, kind0, word0, bits0, sy)
    plane[:, :, w0:] = _plane(ny, nz, w1, vox1, kind1, word1, bits1, sy)
    sv = np.zeros(W, np.uint64)
    la = np.zeros(W, np.uint64)
    lb = np.zeros(W, np.uint64)
    rank0 = rank1 = 0
    next0 = next1 = 0
    matched = 0
    flat = union.ravel()
    for x in range(nx - 1, -1, -1):
        # strips of the cycle edges in slabs above x
        while next0 < vox0.size and vox0[next0] // sx > x:
            next0 = _absorb(vox0[next0] // sx, sx, sy, vox0, kind0, word0, bits0, next0,
                            accy, accz, 0)
        while next1 < vox1.size and vox1[next1] // sx > x:
            next1 = _absorb(vox1[next1] // sx, sx, sy, vox1, kind1, word1, bits1, next1,
                            accy, accz, w0)
        for y in range(ny - 1, -1, -1):
            for z in range(nz - 1, -1, -1):
                v = x * sx + y * sy + z
                for t in range(2, -1, -1):
                    if t == 0:
                        if y + 1 >= ny or z + 1 >= nz:
                            continue
                        if flat[v] and flat[v + sy] and flat[v + 1] and flat[v + sy + 1]:
                            continue  # a face of the union: present from the start
                        ca = _cube(x - 1, y, z, mx, my, mz)
                        for w in range(W):
                            sv[w] = plane[y, z, w] if x == 0 else np.uint64(0)
                    elif t == 1:
                        if x + 1 >= nx or z + 1 >= nz:
                            continue
                        if flat[v] and flat[v + sx] and flat[v + 1] and flat[v + sx + 1]:
                            continue
                        ca = _cube(x, y - 1, z, mx, my, mz)
                        for w in range(W):
                            sv[w] = accz[y, z, w]
                    else:
                        if x + 1 >= nx or y + 1 >= ny:
                            continue
                        if flat[v] and flat[v + sx] and flat[v + sy] and flat[v + sx + sy]:
                            continue
                        ca = _cube(x, y, z - 1, mx, my, mz)
                        for w in range(W):
                            sv[w] = accy[y, z, w]
                    cb = _cube(x, y, z, mx, my, mz)
                    ra = _walk(parent, pot, ca, la)
                    rb = _walk(parent, pot, cb, lb)
                    if ra != rb:
                        parent[ra] = rb
                        for w in range(W):
                            pot[ra, w] = la[w] ^ lb[w] ^ sv[w]
                        continue
                    nonzero = False
                    for w in range(W):
                        la[w] ^= lb[w] ^ sv[w]
                        if la[w] != 0:
                            nonzero = True
                    if not nonzero:
                        continue
                    new0, rank0 = _insert(basis0, piv0, rank0, la[:w0])
                    new1, rank1 = _insert(basis1, piv1, rank1, la[w0:])
                    if new0 and new1:
                        matched += 1
    return matched


@numba.njit(nogil=True, cache=True, inline="always")
def _cube(x, y, z, mx, my, mz):
    if 0 <= x < mx and 0 <= y < my and 0 <= z < mz:
        return (x * my + y) * mz + z
    return mx * my * mz


@numba.njit(nogil=True, cache=True, inline="always")
def _walk(parent, pot, node, acc):
    """Root of ``node``; ``acc`` gets the XOR of the potentials on the way (path halving folds
    each skipped node's potential into its child's)."""
    W = acc.size
    for w in range(W):
        acc[w] = 0
    while parent[node] != node:
        p = parent[node]
        gp = parent[p]
        if gp != p:
            for w in range(W):
                pot[node, w] ^= pot[p, w]
            parent[node] = gp
        for w in range(W):
            acc[w] ^= pot[node, w]
        node = parent[node]
    return node


#: loop classes per mask and block above which the exact sweep is skipped: its potentials take
#: 8 bytes per cube for every 64 classes of each mask (a 160^3 octant at the cap: 256 MB); the
#: caller then falls back to the upper bound and counts the block as inexact
MAX_GENERATORS = 256


def dim1_matches(p: np.ndarray, g: np.ndarray) -> int | None:
    """Matched dimension-1 pairs of one block (all axes at least 2 voxels); None when a mask has
    more than ``MAX_GENERATORS`` loop classes."""
    g0 = _Generators(p)
    if g0.count == 0:
        return 0
    g1 = _Generators(g)
    if g1.count == 0:
        return 0
    if max(g0.count, g1.count) > MAX_GENERATORS:
        return None
    return int(_sweep(np.ascontiguousarray(p | g), g0.count, g0.words, g0.vox, g0.kind, g0.word,
                      g0.bits, g1.count, g1.words, g1.vox, g1.kind, g1.word, g1.bits))
