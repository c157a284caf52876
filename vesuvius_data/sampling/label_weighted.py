"""label-weighted: patches weighted by the class weights of the voxels they hold."""

from __future__ import annotations

import numpy as np

from ..index.patch_index import PatchIndex
from .base import CdfSampler, Strategy, register


@register
class LabelWeighted(Strategy):
    """weight = (sum_c w_c n_c / labeled) ** (1 / temperature), n_c the patch's voxels of
    class c (binary: fg_ratio * w_fg + (1 - fg_ratio) * w_bg).

    The bracket is the mean class weight of a patch's labeled voxels; with the default
    inverse-frequency weights (``index.class_weights()``, one per class of the label spec)
    patches rich in rare classes are drawn more. ``temperature`` > 1 flattens the
    distribution towards uniform, < 1 sharpens it.
    """

    name = "label-weighted"

    def __init__(self, index: PatchIndex, *, class_weights: dict[str, float] | None = None,
                 temperature: float = 1.0, min_labeled_ratio: float = 0.05) -> None:
        super().__init__(index, min_labeled_ratio=min_labeled_ratio)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        w = class_weights or index.class_weights()
        names = list(index.params.label_spec.class_values)
        if set(w) != set(names):
            raise ValueError(f"class_weights needs one weight per class ({', '.join(names)}), "
                             f"got {sorted(w)}")
        self.class_weights, self.temperature = dict(w), float(temperature)
        c = self.candidates
        labeled = np.maximum(index.labeled[c], 1).astype(np.float64)
        mean_w = sum(w[n] * index.class_count(n)[c] for n in names) / labeled
        mean_w = np.where(index.labeled[c] > 0, mean_w, w["background"])  # nothing labeled
        self._sampler = CdfSampler(mean_w ** (1.0 / temperature))

    def probabilities(self) -> np.ndarray:
        return self._full(self._sampler.p)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.candidates[self._sampler.draw(rng, n)]
