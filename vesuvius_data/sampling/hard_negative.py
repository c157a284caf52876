"""hard-negative: patches the model finds hard are drawn more, from the losses it reports."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from ..patch_index import PatchIndex
from .base import Strategy, register


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


@register
class HardNegative(Strategy):
    """Draw proportional to (difficulty + eps)^alpha, mixed with a uniform floor.

    ``difficulty`` is the last loss reported for a patch through ``update(rows, losses)`` (or
    any per-patch hardness, e.g. false-positive mass on background). Rows never reported have
    ``unseen_difficulty`` (default 1.0, above a typical loss) so every patch is seen early; the
    uniform ``floor`` keeps every patch reachable forever.

    p(row) = floor / n_candidates + (1 - floor) * (d_row + eps)^alpha / sum_j (d_j + eps)^alpha
    """

    name = "hard-negative"

    def __init__(self, index: PatchIndex, *, alpha: float = 1.0, eps: float = 1e-3,
                 floor: float = 0.1, unseen_difficulty: float = 1.0,
                 min_labeled_ratio: float = 0.05) -> None:
        super().__init__(index, min_labeled_ratio=min_labeled_ratio)
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor must be in [0, 1], got {floor}")
        if alpha < 0 or eps <= 0:
            raise ValueError(f"need alpha >= 0 and eps > 0, got alpha={alpha}, eps={eps}")
        self.alpha, self.eps, self.floor = float(alpha), float(eps), float(floor)
        self.unseen_difficulty = float(unseen_difficulty)
        # difficulty per candidate (position in self.candidates); NaN = never reported
        self.difficulty = np.full(len(self.candidates), np.nan, np.float32)
        self._position = np.full(len(index), -1, np.int64)
        self._position[self.candidates] = np.arange(len(self.candidates))
        self._tree = SumTree(len(self.candidates))
        self._rebuild()

    def _priority(self, d: np.ndarray) -> np.ndarray:
        d = np.where(np.isnan(d), self.unseen_difficulty, d).astype(np.float64)
        return (np.maximum(d, 0.0) + self.eps) ** self.alpha

    def _rebuild(self) -> None:
        self._tree.set(np.arange(len(self.candidates)), self._priority(self.difficulty))

    def update(self, rows: np.ndarray, losses: np.ndarray) -> None:
        """Record the latest loss of each row (rows outside the candidates are ignored)."""
        rows = np.asarray(rows, np.int64).ravel()
        losses = np.asarray(losses, np.float64).ravel()
        if rows.shape != losses.shape:
            raise ValueError(f"rows {rows.shape} and losses {losses.shape} differ in shape")
        if not np.all(np.isfinite(losses)):
            raise ValueError("losses must be finite (a NaN loss would poison the sampler)")
        pos = self._position[rows]
        keep = pos >= 0
        pos, losses = pos[keep], losses[keep]
        self.difficulty[pos] = losses
        self._tree.set(pos, self._priority(losses))

    def probabilities(self) -> np.ndarray:
        pri = self._tree.leaves()
        n = len(self.candidates)
        return self._full(self.floor / n + (1 - self.floor) * pri / pri.sum())

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        uv = rng.random(2 * n)
        return self.candidates[self._tree.draw(uv[:n], uv[n:], self.floor)]

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"difficulty": self.difficulty.copy(),
                                       "candidates": self.candidates.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if not np.array_equal(state["candidates"], self.candidates):
            raise ValueError("hard-negative state belongs to another index or candidate set")
        self.difficulty = np.asarray(state["difficulty"], np.float32).copy()
        self._rebuild()
