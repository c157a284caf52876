"""Literal, slow replay of Betti-Matching-3D's dimension-0 and dimension-2 passes (tiny volumes).

Written from the algorithm's description: cells sorted by (birth, x, y, z, type); union-find
whose link keeps the older root (dimension 0: smaller birth, then smaller index; dual pass:
larger birth, then larger index); the prediction's and ground truth's pairs keyed by the dying
cell of a mirrored union-find; the comparison image is the elementwise minimum (the union of
foregrounds). ``topology.py`` reads the same counts from components; the tests prove they agree.
"""

from __future__ import annotations

import numpy as np

INF = np.inf


class _UF:
    def __init__(self, births, dual=False):
        self.parent = list(range(len(births)))
        self.birth = list(births)
        self.dual = dual

    def find(self, x):
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def link(self, x, y):
        """Returns the dying root."""
        bx, by = self.birth[x], self.birth[y]
        if self.dual:
            young = x if (bx, x) < (by, y) else y
        else:
            young = x if (bx, x) > (by, y) else y
        old = y if young == x else x
        self.parent[young] = old
        return young


def _edges(img):
    nx, ny, nz = img.shape
    out = []
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                for t, (dx, dy, dz) in enumerate(((1, 0, 0), (0, 1, 0), (0, 0, 1))):
                    if x + dx < nx and y + dy < ny and z + dz < nz:
                        a = (x * ny + y) * nz + z
                        b = ((x + dx) * ny + y + dy) * nz + z + dz
                        birth = max(img[x, y, z], img[x + dx, y + dy, z + dz])
                        out.append((birth, (x, y, z, t), a, b))
    out.sort(key=lambda e: (e[0], e[1]))
    return out


def dim0(p, g):
    """(matched, bars of p, bars of g) in dimension 0 for boolean masks p, g (foreground True)."""
    imgs = [np.where(p, 0.0, 1.0), np.where(g, 0.0, 1.0)]
    comp = np.minimum(*imgs)
    keys, bars = [], []
    for img in imgs:
        uf = _UF(img.ravel())
        k = set()
        for birth, _, a, b in _edges(img):
            ra, rb = uf.find(a), uf.find(b)
            if ra != rb:
                d = uf.link(ra, rb)
                if uf.birth[d] != birth:
                    k.add(d)
        keys.append(k)
        bars.append(len(k))
    ufc, uf0, uf1 = _UF(comp.ravel()), _UF(imgs[0].ravel()), _UF(imgs[1].ravel())
    matched = 0
    for birth, _, a, b in _edges(comp):
        ra, rb = ufc.find(a), ufc.find(b)
        if ra != rb:
            dc = ufc.link(ra, rb)
            d0 = uf0.link(uf0.find(a), uf0.find(b))
            d1 = uf1.link(uf1.find(a), uf1.find(b))
            if ufc.birth[dc] != birth and d0 in keys[0] and d1 in keys[1]:
                matched += 1
    return matched, bars[0], bars[1]


def _cube_births(img):
    nx, ny, nz = img.shape
    b = np.empty((nx - 1, ny - 1, nz - 1))
    for x in range(nx - 1):
        for y in range(ny - 1):
            for z in range(nz - 1):
                b[x, y, z] = img[x:x + 2, y:y + 2, z:z + 2].max()
    return list(b.ravel()) + [INF]  # the last node is the outside


def _dual_edges(img):
    """Faces with their two cubes (or the outside), sorted by (birth, index), then reversed."""
    nx, ny, nz = img.shape
    mx, my, mz = nx - 1, ny - 1, nz - 1
    outside = mx * my * mz

    def cube(x, y, z):
        if 0 <= x < mx and 0 <= y < my and 0 <= z < mz:
            return (x * my + y) * mz + z
        return outside

    out = []
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                for t in range(3):
                    if t == 0 and y + 1 < ny and z + 1 < nz:
                        birth = img[x, y:y + 2, z:z + 2].max()
                        ends = cube(x - 1, y, z), cube(x, y, z)
                    elif t == 1 and x + 1 < nx and z + 1 < nz:
                        birth = img[x:x + 2, y, z:z + 2].max()
                        ends = cube(x, y - 1, z), cube(x, y, z)
                    elif t == 2 and x + 1 < nx and y + 1 < ny:
                        birth = img[x:x + 2, y:y + 2, z].max()
                        ends = cube(x, y, z - 1), cube(x, y, z)
                    else:
                        continue
                    out.append((birth, (x, y, z, t), *ends))
    out.sort(key=lambda e: (e[0], e[1]))
    return out[::-1]


def dim2(p, g):
    """(matched, bars of p, bars of g) in dimension 2."""
    imgs = [np.where(p, 0.0, 1.0), np.where(g, 0.0, 1.0)]
    comp = np.minimum(*imgs)
    comp_births = _cube_births(comp)
    keys, bars = [], []
    for img in imgs:
        uf, mirror = _UF(_cube_births(img), dual=True), _UF(comp_births, dual=True)
        k = set()
        n = 0
        for birth, _, a, b in _dual_edges(img):
            ra, rb = uf.find(a), uf.find(b)
            if ra != rb:
                d = uf.link(ra, rb)
                dm = mirror.link(mirror.find(a), mirror.find(b))
                if uf.birth[d] != birth:
                    k.add(dm)
                    n += 1
        keys.append(k)
        bars.append(n)
    ufc = _UF(comp_births, dual=True)
    matched = 0
    for birth, _, a, b in _dual_edges(comp):
        ra, rb = ufc.find(a), ufc.find(b)
        if ra != rb:
            d = ufc.link(ra, rb)
            if ufc.birth[d] != birth and d in keys[0] and d in keys[1]:
                matched += 1
    return matched, bars[0], bars[1]
