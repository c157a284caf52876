"""label-weighted: patches weighted by the class weights of the voxels they hold."""

from __future__ import annotations

import numpy as np

from ..index.patch_index import PatchIndex
from .base import CdfSampler, Strategy, register


@register
class LabelWeighted(Strategy):
    """weight = (fg_ratio * w_fg + (1 - fg_ratio) * w_bg) ** (1 / temperature).

    The bracket is the mean class weight of a patch's labeled voxels; with the default
    inverse-frequency weights (``index.class_weights()``) surface-rich patches are drawn more.
    ``temperature`` > 1 flattens the distribution towards uniform, < 1 sharpens it.
    """

    name = "label-weighted"

    def __init__(self, index: PatchIndex, *, class_weights: dict[str, float] | None = None,
                 temperature: float = 1.0, min_labeled_ratio: float = 0.05) -> None:
        super().__init__(index, min_labeled_ratio=min_labeled_ratio)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        w = class_weights or index.class_weights()
        if set(w) != {"background", "foreground"}:
            raise ValueError(f"class_weights needs keys background and foreground, got {set(w)}")
        self.class_weights, self.temperature = dict(w), float(temperature)
        r = index.fg_ratio[self.candidates]
        self._sampler = CdfSampler(
            (r * w["foreground"] + (1 - r) * w["background"]) ** (1.0 / temperature))

    def probabilities(self) -> np.ndarray:
        return self._full(self._sampler.p)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.candidates[self._sampler.draw(rng, n)]
