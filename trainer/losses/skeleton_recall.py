"""Skeleton recall (Kirchhoff et al., ECCV 2024): soft recall of the prediction on the label's
tubed medial surface.

Why this term: a pinhole or a tear through a sheet removes medial-surface voxels that no
region loss weighs for what they are (a few voxels of a big sheet), while TopoScore counts the
hole as a new loop. The medial surface is computed once per volume (``vesuvius-derive``: the
``skeleton`` role, ridges of the distance transform, label 1 = the sheets'); here it is
widened into a tube by one 3x3x3 max-pool and cut back to the labeled surface (so the tube
of a 2-3 voxel sheet is the sheet's core, which a right prediction recalls whole, and label 2
never counts). The step then costs one pooling, a multiply and
two sums, where clDice skeletonises the prediction softly at every step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .targets import SKELETON_SURFACE, Targets, TermValue, float32_term, masked_sum


def skeleton_tube(skeleton: torch.Tensor, fg: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """The sheets' medial surface (``skeleton == 1``) dilated by a (2r+1)^3 cube, on labeled
    surface voxels only (``fg``: 1 there, 0 on background and unlabeled), as float."""
    ridge = (skeleton == SKELETON_SURFACE).float()
    if radius > 0:
        ridge = F.max_pool3d(ridge, 2 * radius + 1, stride=1, padding=radius)
    return ridge * fg


class SkeletonRecallLoss(nn.Module):
    """1 - (sum p * tube + s) / (sum tube + s), per sample and over the batch."""

    def __init__(self, radius: int = 1, smooth: float = 1.0) -> None:
        super().__init__()
        self.radius, self.smooth = int(radius), float(smooth)

    @float32_term
    def forward(self, logits: torch.Tensor, t: Targets) -> TermValue:
        tube = skeleton_tube(t.require("skeleton", "skeleton_recall"), t.fg, self.radius)
        p = torch.sigmoid(logits)
        hit, n = masked_sum(p, tube), tube.flatten(1).sum(1)
        s = self.smooth
        return TermValue(1 - (hit.sum() + s) / (n.sum() + s), 1 - (hit + s) / (n + s))
