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

K's loops come from ``_loops.py``, one cycle per class of H1(K). ``tests/betti_reference.py``
replays the scorer's three reductions literally; the tests check this module against it.

Why the reverse sweep is enough: the faces not yet added form a graph (cubes and the outside as
nodes), which by Alexander duality carries H1 of what has been added; a face closing a cycle in
that graph is, forwards, a face that fills a loop, and whether the filled class comes from K is
whether the cycle's linking vector with K's loops is new among the cycles of the faces after it.
"""

from __future__ import annotations

import numba
import numpy as np

from ._cubical import face_cubes, face_in_block, square_in
from ._loops import LoopGenerators

__all__ = ["MAX_GENERATORS", "dim1_matches"]


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
                for t in range(2, -1, -1):
                    if not face_in_block(x, y, z, t, nx, ny, nz) or square_in(union, x, y, z, t):
                        continue  # outside the block, or a face of the union (present at 0)
                    ca, cb = face_cubes(x, y, z, t, mx, my, mz)
                    for w in range(W):  # the face's Seifert parities
                        if t == 2:
                            sv[w] = accy[y, z, w]
                        elif t == 1:
                            sv[w] = accz[y, z, w]
                        else:
                            sv[w] = plane[y, z, w] if x == 0 else np.uint64(0)
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
    g0 = LoopGenerators(p)
    if g0.count == 0:
        return 0
    g1 = LoopGenerators(g)
    if g1.count == 0:
        return 0
    if max(g0.count, g1.count) > MAX_GENERATORS:
        return None
    return int(_sweep(np.ascontiguousarray(p | g), g0.count, g0.words, g0.vox, g0.kind, g0.word,
                      g0.bits, g1.count, g1.words, g1.vox, g1.kind, g1.word, g1.bits))
