"""balanced: a fixed share of foreground-rich patches, the rest background-dominant."""

from __future__ import annotations

import numpy as np

from ..index.patch_index import PatchIndex
from .base import CdfSampler, Strategy, register


@register
class Balanced(Strategy):
    """Draw from the foreground pool with probability ``fg_share``, else from the background pool.

    Pools split the candidates by ``fg_ratio`` (surface / labeled voxels): foreground pool
    ``fg_ratio > fg_min``, background pool the rest. nnU-Net's rule (1/3 of patches hold
    foreground) is ``fg_min=0``; but at 128^3 nearly every scroll patch holds some surface, so
    the default ``fg_min="auto"`` is the dataset's surface share of labeled voxels: the
    foreground pool is patches richer in surface than the dataset. With ``bins=k`` each pool is
    stratified into k fg_ratio quantile bins drawn equally often (rare extremes get seen).

    Args:
        fg_share: target share of draws from the foreground pool, in (0, 1).
        fg_min: threshold on fg_ratio, a float or "auto".
        bins: None, or the number of fg_ratio strata per pool.
    """

    name = "balanced"

    def __init__(self, index: PatchIndex, *, fg_share: float = 1 / 3,
                 fg_min: float | str = "auto", bins: int | None = None,
                 min_labeled_ratio: float = 0.05) -> None:
        super().__init__(index, min_labeled_ratio=min_labeled_ratio)
        if not 0.0 < fg_share < 1.0:
            raise ValueError(f"fg_share must be in (0, 1), got {fg_share}")
        if fg_min == "auto":
            fg_min = index.census().foreground_share_of_labeled
        elif isinstance(fg_min, str):
            raise ValueError(f"fg_min must be a number or 'auto', got {fg_min!r}")
        self.fg_share, self.fg_min = float(fg_share), float(fg_min)
        ratio = index.fg_ratio[self.candidates]
        is_fg = ratio > self.fg_min
        for name, mask in (("foreground", is_fg), ("background", ~is_fg)):
            if not mask.any():
                raise ValueError(
                    f"balanced: the {name} pool is empty: of {len(ratio)} candidate patches "
                    f"{int(is_fg.sum())} have fg_ratio > fg_min={self.fg_min:.4f}; choose "
                    f"fg_min between {ratio.min():.4f} and {ratio.max():.4f}, or use 'uniform'"
                )
        p = np.zeros(len(ratio))
        for share, mask in ((self.fg_share, is_fg), (1 - self.fg_share, ~is_fg)):
            p[mask] = share * _pool_weights(ratio[mask], bins)
        self._sampler = CdfSampler(p)
        self.is_fg = is_fg

    def probabilities(self) -> np.ndarray:
        return self._full(self._sampler.p)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.candidates[self._sampler.draw(rng, n)]


def _pool_weights(ratio: np.ndarray, bins: int | None) -> np.ndarray:
    """Weights summing to 1 over a pool: uniform, or equal per fg_ratio quantile bin."""
    if not bins or bins <= 1:
        return np.full(len(ratio), 1.0 / len(ratio))
    edges = np.quantile(ratio, np.linspace(0, 1, bins + 1)[1:-1])
    which = np.searchsorted(edges, ratio, side="right")
    counts = np.bincount(which, minlength=bins)
    used = np.count_nonzero(counts)
    return 1.0 / (used * counts[which])
