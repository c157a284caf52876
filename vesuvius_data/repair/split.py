"""Cut bridges between sheets: a watershed of the probabilities from confident seeds.

Two sheets a few voxels apart merge wherever the model puts p > threshold across the gap; one
predicted component then covers two labelled ones (VOI's merge term, and a missing component
for TopoScore). The bridge is where the model was least sure, so: seeds are the 26-connected
components of p > ``seed`` with at least ``min_seed`` voxels, the mask is flooded from them
downhill in probability (26-connected), and voxels where two floods meet are removed (the
watershed line). Mask components without a seed are left as they are, and so is a component
with one seed: a sheet is cut only where it held two confident parts joined by a weak neck.
"""

from __future__ import annotations

import cc3d
import numpy as np

__all__ = ["split_bridges"]


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
                        mask=contested, connectivity=3, watershed_line=True)
    return (mask & ~contested) | (flooded > 0)
