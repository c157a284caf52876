"""A binary sum tree of priorities (numba): O(log n) to change one, O(log n) to draw one.

The hard-negative strategy keeps one leaf per candidate patch; updates from the training loop
change a handful of leaves per step, and draws descend from the root.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["SumTree"]


@numba.njit(nogil=True, cache=True)
def _tree_set(tree, size, leaves, values):
    for i in range(leaves.shape[0]):
        pos = size + leaves[i]
        tree[pos] = values[i]
        pos //= 2
        while pos >= 1:
            tree[pos] = tree[2 * pos] + tree[2 * pos + 1]
            pos //= 2


@numba.njit(nogil=True, cache=True)
def _tree_find(tree, size, u, v, floor, n):
    """Leaf per draw: uniform over n when v < floor, else by priority (descend with u)."""
    out = np.empty(u.shape[0], np.int64)
    for i in range(u.shape[0]):
        if v[i] < floor:
            out[i] = min(int(u[i] * n), n - 1)
            continue
        target = u[i] * tree[1]
        pos = 1
        while pos < size:
            left = tree[2 * pos]
            if target < left or tree[2 * pos + 1] <= 0.0:
                pos = 2 * pos
            else:
                target -= left
                pos = 2 * pos + 1
        out[i] = min(pos - size, n - 1)
    return out


class SumTree:
    """Priorities in a binary sum tree: O(log n) to change one, O(log n) to draw one."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.size = 1 << max(int(n - 1).bit_length(), 0)
        self.tree = np.zeros(2 * self.size, np.float64)

    def set(self, leaves: np.ndarray, values: np.ndarray) -> None:
        _tree_set(self.tree, self.size, np.asarray(leaves, np.int64),
                  np.asarray(values, np.float64))

    def draw(self, u: np.ndarray, v: np.ndarray | None = None, floor: float = 0.0
             ) -> np.ndarray:
        """Leaves for uniforms ``u``; where ``v < floor`` the leaf is uniform instead."""
        u = np.asarray(u, np.float64)
        v = np.ones_like(u) if v is None else np.asarray(v, np.float64)
        return _tree_find(self.tree, self.size, u, v, floor, self.n)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def leaves(self) -> np.ndarray:
        return self.tree[self.size:self.size + self.n]
