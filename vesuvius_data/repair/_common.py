"""Helpers shared by the repair steps: sheet labels and the scorer's tiles."""

from __future__ import annotations

import cc3d
import numpy as np

from ..metrics.topology import octant_slices

CUBE = np.ones((3, 3, 3), bool)
MAX_ROUNDS = 8  # fixed-point rounds; in practice 1-3 (every round stays inside one closing)


def sheet_labels(mask: np.ndarray) -> np.ndarray:
    """26-connected components: what the repair steps call sheets."""
    return cc3d.connected_components(mask, connectivity=26).astype(np.int32)


def tiles(shape: tuple[int, ...], octants: bool) -> list[tuple[slice, ...]]:
    """The scorer's octants, or the whole volume as one tile."""
    return octant_slices(shape) if octants else [tuple(slice(0, n) for n in shape)]
