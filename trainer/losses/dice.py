"""Soft Dice over valid voxels."""

from __future__ import annotations

import torch
from torch import nn

from .targets import Targets, TermValue, float32_term, masked_sum


class DiceLoss(nn.Module):
    """1 - (2 sum(p g) + s) / (sum(p) + sum(g) + s), sums over valid voxels only.

    p = sigmoid(logits), g = foreground target, s = ``smooth`` (default 1 voxel) keeps the
    ratio defined for empty patches (both empty -> loss 0). ``batch`` sums over the whole batch
    (stable with patches that hold little surface); ``per_sample`` sums per patch.
    """

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = smooth

    @float32_term
    def forward(self, logits: torch.Tensor, t: Targets) -> TermValue:
        p = torch.sigmoid(logits)
        valid = t.valid.float()
        inter = masked_sum(p * t.fg, valid)
        denom = masked_sum(p, valid) + masked_sum(t.fg, valid)
        s = self.smooth
        per_sample = 1 - (2 * inter + s) / (denom + s)
        batch = 1 - (2 * inter.sum() + s) / (denom.sum() + s)
        return TermValue(batch, per_sample)
