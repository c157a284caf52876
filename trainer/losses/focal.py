"""Sigmoid focal loss, alpha on the surface class, mean over valid voxels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .targets import Targets, TermValue, float32_term, masked_sum


class FocalLoss(nn.Module):
    """FL = -alpha_t (1 - p_t)^gamma log(p_t), averaged over valid voxels.

    p_t = p for surface voxels, 1 - p for background. ``alpha`` weights the POSITIVE (surface)
    class: alpha_t = alpha on surface voxels, 1 - alpha on background (alpha = 1 gives zero loss
    on background; alpha = None disables it). ``class_weights`` (background, foreground)
    multiply per voxel on top. log(p_t) comes from ``binary_cross_entropy_with_logits``, which is
    exact for saturated logits where log(sigmoid(x)) in low precision is not.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = None,
                 class_weights: tuple[float, float] | None = None) -> None:
        super().__init__()
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"focal alpha must be in [0, 1] or None, got {alpha}")
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma, self.alpha = float(gamma), alpha
        self.class_weights = class_weights

    @float32_term
    def forward(self, logits: torch.Tensor, t: Targets) -> TermValue:
        g = t.fg
        ce = F.binary_cross_entropy_with_logits(logits, g, reduction="none")
        p_t = torch.exp(-ce)
        loss = (1 - p_t) ** self.gamma * ce
        if self.alpha is not None:
            loss = loss * (self.alpha * g + (1 - self.alpha) * (1 - g))
        if self.class_weights is not None:
            w_bg, w_fg = self.class_weights
            loss = loss * (w_fg * g + w_bg * (1 - g))
        valid = t.valid.float()
        total = masked_sum(loss, valid)
        count = valid.flatten(1).sum(1)
        per_sample = total / count.clamp(min=1)
        return TermValue(total.sum() / count.sum().clamp(min=1), per_sample)
