"""Kervadec boundary loss from a precomputed, clipped signed distance to the surface."""

from __future__ import annotations

import torch
from torch import nn

from .targets import Targets, TermValue, float32_term, masked_sum


class BoundaryLoss(nn.Module):
    """mean over valid voxels of p * sdt / clip.

    sdt is the signed Euclidean distance to the surface class, negative inside it, positive
    outside, clipped to [-clip, clip] when it was derived (``vesuvius_data.derived``); dividing
    by ``clip`` keeps the term in [-1, 1]. Probability mass far outside the surface costs most;
    mass inside the surface lowers the loss, so the minimum is the surface itself (Kervadec et
    al., 2019). Values are negative for good predictions: that is expected.
    """

    def __init__(self, clip: float = 10.0) -> None:
        super().__init__()
        if clip <= 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        self.clip = float(clip)

    @float32_term
    def forward(self, logits: torch.Tensor, t: Targets) -> TermValue:
        sdt = t.require("sdt", "boundary")
        p = torch.sigmoid(logits)
        valid = t.valid.float()
        total = masked_sum(p * sdt.clamp(-self.clip, self.clip) / self.clip, valid)
        count = valid.flatten(1).sum(1)
        return TermValue(total.sum() / count.sum().clamp(min=1), total / count.clamp(min=1))
