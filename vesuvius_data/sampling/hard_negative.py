"""hard-negative: patches the model finds hard are drawn more, from the losses it reports."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..index.patch_index import PatchIndex
from .base import Strategy, register
from .sum_tree import SumTree


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
