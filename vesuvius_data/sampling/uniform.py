"""uniform: every candidate patch is equally likely."""

from __future__ import annotations

import numpy as np

from .base import Strategy, register


@register
class Uniform(Strategy):
    """Each row with ``labeled_ratio >= min_labeled_ratio`` has probability 1 / candidates."""

    name = "uniform"

    def probabilities(self) -> np.ndarray:
        return self._full(np.full(len(self.candidates), 1.0 / len(self.candidates)))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        # floor(u * k): as uniform as rng.integers for k << 2^53, and ~5x cheaper per call
        return self.candidates[(rng.random(n) * len(self.candidates)).astype(np.int64)]
