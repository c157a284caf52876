"""balanced: a fixed share of foreground-rich patches, the rest background-dominant; or, with
``class_shares``, a guaranteed share of patches holding each class (nnU-Net's oversampling)."""

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

    With ``class_shares`` ({class name: share}, any classes of the index's label spec,
    shares summing to at most 1) the pools are per class instead: with probability
    ``share_c`` the draw is uniform over the candidates holding class c (at least one voxel),
    and with the rest uniform over all candidates; so a patch holding class c comes up at
    least ``share_c`` of the time however rare c is (nnU-Net's foreground oversampling, per
    class). ``fg_share``, ``fg_min`` and ``bins`` do not apply then.

    Args:
        fg_share: target share of draws from the foreground pool, in (0, 1).
        fg_min: threshold on fg_ratio, a float or "auto".
        bins: None, or the number of fg_ratio strata per pool.
        class_shares: None, or {class name: share} as above.
    """

    name = "balanced"

    def __init__(self, index: PatchIndex, *, fg_share: float = 1 / 3,
                 fg_min: float | str = "auto", bins: int | None = None,
                 class_shares: dict[str, float] | None = None,
                 min_labeled_ratio: float = 0.05) -> None:
        super().__init__(index, min_labeled_ratio=min_labeled_ratio)
        self.class_shares = None if class_shares is None else dict(class_shares)
        if class_shares is not None:
            self._sampler = CdfSampler(_class_pools(index, self.candidates, class_shares))
            return
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


def _class_pools(index: PatchIndex, candidates: np.ndarray,
                 shares: dict[str, float]) -> np.ndarray:
    """Draw probabilities over candidates: share_c uniform over those holding class c, the
    rest uniform over all."""
    if not shares or any(not 0 < v <= 1 for v in shares.values()) or \
            sum(shares.values()) > 1 + 1e-9:
        raise ValueError(f"class_shares must be shares in (0, 1] summing to at most 1, got "
                         f"{shares}")
    p = np.full(len(candidates), (1 - sum(shares.values())) / len(candidates))
    for name, share in shares.items():
        holds = index.class_count(name)[candidates] > 0
        if not holds.any():
            raise ValueError(f"balanced: no candidate patch holds class {name!r}; drop it from "
                             "class_shares or lower min_labeled_ratio")
        p[holds] += share / holds.sum()
    return p


def _pool_weights(ratio: np.ndarray, bins: int | None) -> np.ndarray:
    """Weights summing to 1 over a pool: uniform, or equal per fg_ratio quantile bin."""
    if not bins or bins <= 1:
        return np.full(len(ratio), 1.0 / len(ratio))
    edges = np.quantile(ratio, np.linspace(0, 1, bins + 1)[1:-1])
    which = np.searchsorted(edges, ratio, side="right")
    counts = np.bincount(which, minlength=bins)
    used = np.count_nonzero(counts)
    return 1.0 / (used * counts[which])
