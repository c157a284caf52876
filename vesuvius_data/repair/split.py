"""Cut bridges between sheets: a watershed of the probabilities from confident seeds.

Two sheets a few voxels apart merge wherever the model puts p > threshold across the gap; one
predicted component then covers two labelled ones (VOI's merge term, and a missing component
for TopoScore). The bridge is where the model was least sure, so: seeds are the 26-connected
components of p > ``seed`` with at least ``min_seed`` voxels, the mask is flooded from them
downhill in probability (26-connected), and where two floods meet the lower-numbered one gives
up its voxels that touch the other (a one-voxel watershed line). Mask components without a seed
are left as they are, and so is a component with one seed: a sheet is cut only where it held
two confident parts joined by a weak neck.

The line is drawn here, not by ``watershed(..., watershed_line=True)``: on smooth probability
maps (in-plane smoothing, TTA averages) scikit-image's line mode took minutes and ran out of
memory on a 128^3 volume (its heap grows without bound), while the plain flood takes half a
second.
"""

from __future__ import annotations

import itertools

import cc3d
import numpy as np

__all__ = ["split_bridges"]

#: half of the 26 neighbour offsets: each unordered pair of neighbours is visited once
_FORWARD = [d for d in itertools.product((-1, 0, 1), repeat=3) if d > (0, 0, 0)]


def _watershed_line(flooded: np.ndarray) -> np.ndarray:
    """Voxels whose label is lower than a 26-neighbour's (both labelled): removing them leaves
    no two differently labelled voxels touching, so the floods come apart as 26-components."""
    line = np.zeros(flooded.shape, bool)
    for d in _FORWARD:
        src = tuple(slice(max(-k, 0), n - max(k, 0)) for k, n in zip(d, flooded.shape, strict=True))
        dst = tuple(slice(max(k, 0), n + min(k, 0)) for k, n in zip(d, flooded.shape, strict=True))
        a, b = flooded[src], flooded[dst]
        line[src] |= (a > 0) & (a < b)
        line[dst] |= (b > 0) & (b < a)
    return line


def split_bridges(prob: np.ndarray, mask: np.ndarray, seed: float, min_seed: int = 64
                  ) -> np.ndarray:
    """``mask`` with the watershed lines between confident seeds removed."""
    from skimage.segmentation import watershed

    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask
    seeds = cc3d.connected_components((prob > seed) & mask, connectivity=26)
    seeds = cc3d.dust(seeds, threshold=max(int(min_seed), 1), connectivity=26, in_place=True)
    if seeds.max() == 0:
        return mask
    parts = cc3d.connected_components(mask, connectivity=26)
    seeds_per_part = np.zeros(int(parts.max()) + 1, np.int64)
    kept = np.unique(seeds[seeds > 0])
    first = np.zeros(int(seeds.max()) + 1, np.int64)
    np.maximum.at(first, seeds.ravel(), parts.ravel())  # the part of each seed
    np.add.at(seeds_per_part, first[kept], 1)
    contested = seeds_per_part[parts] >= 2  # parts holding two or more seeds: may be cut
    if not contested.any():
        return mask
    flooded = watershed(-np.asarray(prob, np.float32), markers=np.where(contested, seeds, 0),
                        mask=contested, connectivity=3)
    return mask & ~_watershed_line(flooded)
