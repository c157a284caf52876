"""The strategy contract and the one registry that names strategies.

A strategy turns the rows of a PatchIndex into a sampling distribution. It draws rows from an
explicit ``np.random.Generator`` (never a global RNG), exposes the per-row probabilities it
promises (tests hold it to them), and may learn from per-patch losses (``update``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from ..index.patch_index import PatchIndex

__all__ = ["Strategy", "STRATEGIES", "register", "make_strategy", "CdfSampler"]

#: name -> strategy class; an unknown name lists these
STRATEGIES: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: add a strategy to ``STRATEGIES`` under ``cls.name``."""
    if cls.name in STRATEGIES:
        raise ValueError(f"strategy {cls.name!r} registered twice")
    STRATEGIES[cls.name] = cls
    return cls


def make_strategy(name: str, index: PatchIndex, **options: Any) -> Strategy:
    """Build a registered strategy by name, e.g. ``make_strategy("balanced", index)``."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown sampling strategy {name!r}; valid: "
                         f"{', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name](index, **options)


class CdfSampler:
    """Draws indices proportional to non-negative weights with a float64 CDF.

    ``torch.multinomial`` refuses more than 2^24 categories; a float64 CDF with a binary search
    has no such limit and costs O(log n) a draw.
    """

    def __init__(self, weights: np.ndarray) -> None:
        weights = np.asarray(weights, np.float64)
        if weights.ndim != 1 or len(weights) == 0:
            raise ValueError("weights must be a non-empty 1-D array")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("weights must be finite and non-negative")
        total = weights.sum()
        if total <= 0:
            raise ValueError("weights sum to zero: nothing can be drawn")
        self.cdf = np.cumsum(weights) / total
        self.p = weights / total

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        i = np.searchsorted(self.cdf, rng.random(n), side="right")
        return np.minimum(i, len(self.cdf) - 1)


class Strategy(ABC):
    """Base class: candidate rows are those with ``labeled_ratio >= min_labeled_ratio``.

    Patches with (almost) nothing labeled teach nothing: every loss ignores label 2.
    """

    name: ClassVar[str]

    def __init__(self, index: PatchIndex, *, min_labeled_ratio: float = 0.05) -> None:
        if len(index) == 0:
            raise ValueError(f"{self.name}: the index has no rows")
        if not 0.0 <= min_labeled_ratio <= 1.0:
            raise ValueError(f"min_labeled_ratio must be in [0, 1], got {min_labeled_ratio}")
        self.index = index
        self.min_labeled_ratio = float(min_labeled_ratio)
        self.candidates = np.flatnonzero(index.labeled_ratio >= min_labeled_ratio)
        if len(self.candidates) == 0:
            best = float(index.labeled_ratio.max())
            raise ValueError(
                f"{self.name}: empty candidate set: none of the {len(index)} patches has "
                f"labeled_ratio >= {min_labeled_ratio} (the best has {best:.3f}); lower "
                "min_labeled_ratio or check that the labels are not all 'ignore'"
            )

    @abstractmethod
    def probabilities(self) -> np.ndarray:
        """Probability of drawing each index row (length ``len(index)``, sums to 1)."""

    @abstractmethod
    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` index rows (int64), independently, from ``probabilities()``."""

    def update(self, rows: np.ndarray, losses: np.ndarray) -> None:  # noqa: B027
        """Feedback from training (per-patch losses); stateless strategies ignore it."""

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"state of strategy {state.get('name')!r} cannot load into "
                             f"{self.name!r}")

    def _full(self, p_candidates: np.ndarray) -> np.ndarray:
        p = np.zeros(len(self.index), np.float64)
        p[self.candidates] = p_candidates
        return p

    def __repr__(self) -> str:
        return f"{type(self).__name__}(candidates={len(self.candidates)}/{len(self.index)})"
