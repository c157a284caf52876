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


def _cells(shape):
    """Edges and faces as {key: boundary}: key (x, y, z, type) in Betti-Matching-3D's order."""
    nx, ny, nz = shape
    edges, faces = {}, {}
    step = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                for t, (dx, dy, dz) in enumerate(step):
                    if x + dx < nx and y + dy < ny and z + dz < nz:
                        edges[(x, y, z, t)] = ((x, y, z), (x + dx, y + dy, z + dz))
                # face type t spans the two axes other than t
                for t in range(3):
                    a, b = [k for k in range(3) if k != t]
                    da, db = step[a], step[b]
                    far = (x + da[0] + db[0], y + da[1] + db[1], z + da[2] + db[2])
                    if far[0] < nx and far[1] < ny and far[2] < nz:
                        faces[(x, y, z, t)] = (
                            (x, y, z, a), (x + db[0], y + db[1], z + db[2], a),
                            (x, y, z, b), (x + da[0], y + da[1], z + da[2], b))
    return edges, faces


def _edge_value(img, edge, edges):
    a, b = edges[edge]
    return max(img[a], img[b])


def _face_value(img, face, edges, faces):
    return max(_edge_value(img, e, edges) for e in faces[face])


def _reduce(faces_sorted, face_boundary, edge_rank):
    """Standard column reduction over Z2; returns {column face: pivot edge} for nonzero ones."""
    by_pivot, pivots = {}, {}
    rank_to_edge = {r: e for e, r in edge_rank.items()}
    for f in faces_sorted:
        col = 0
        for e in face_boundary[f]:
            col ^= 1 << edge_rank[e]
        while col:
            low = col.bit_length() - 1
            if low not in by_pivot:
                by_pivot[low] = col
                pivots[f] = rank_to_edge[low]
                break
            col ^= by_pivot[low]
    return pivots


def dim1(p, g):
    """(matched, bars of p, bars of g) in dimension 1: input, comparison and image reductions."""
    imgs = [np.where(p, 0.0, 1.0), np.where(g, 0.0, 1.0)]
    comp = np.minimum(*imgs)
    edges, faces = _cells(p.shape)

    def face_order(img):
        return sorted(faces, key=lambda f: (_face_value(img, f, edges, faces), f))

    def ranks(img):
        ordered = sorted(edges, key=lambda e: (_edge_value(img, e, edges), e))
        return {e: r for r, e in enumerate(ordered)}

    def persistent(img, piv):
        return {f: e for f, e in piv.items()
                if _edge_value(img, e, edges) != _face_value(img, f, edges, faces)}

    births = []
    for img in imgs:
        piv = persistent(img, _reduce(face_order(img), faces, ranks(img)))
        births.append(set(piv.values()))
    comp_order = face_order(comp)
    comp_pairs = persistent(comp, _reduce(comp_order, faces, ranks(comp)))
    image = [_reduce(comp_order, faces, ranks(img)) for img in imgs]
    matched = sum(1 for d in comp_pairs
                  if image[0].get(d) in births[0] and image[1].get(d) in births[1])
    return matched, len(births[0]), len(births[1])
