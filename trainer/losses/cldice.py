"""clDice with a soft skeleton (Shit et al., 2021), masked by valid voxels."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from .targets import SKELETON_SURFACE, Targets, TermValue, float32_term, masked_sum


def _shifted(x: torch.Tensor, dim: int, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x shifted by one voxel down and up along ``dim``; the voxel shifted in is ``fill``."""
    n = x.shape[dim]
    pad = torch.full_like(x.narrow(dim, 0, 1), fill)
    return (torch.cat([pad, x.narrow(dim, 0, n - 1)], dim),
            torch.cat([x.narrow(dim, 1, n - 1), pad], dim))


def soft_erode(x: torch.Tensor) -> torch.Tensor:
    """Min over the voxel and its 6 neighbours (outside the patch does not count).

    Same as the usual three 1-D min-pools, written as elementwise minima of shifted tensors:
    ~20x faster than ``max_pool3d`` on a CPU, and as fast on a GPU.
    """
    out = x
    for dim in (2, 3, 4):
        down, up = _shifted(x, dim, float("inf"))
        out = torch.minimum(out, torch.minimum(down, up))
    return out


def soft_dilate(x: torch.Tensor) -> torch.Tensor:
    """Max over the 3x3x3 box, as three separable 1-D maxima."""
    for dim in (2, 3, 4):
        down, up = _shifted(x, dim, float("-inf"))
        x = torch.maximum(x, torch.maximum(down, up))
    return x


def soft_skeleton(x: torch.Tensor, iterations: int) -> torch.Tensor:
    """Iterative soft morphological skeleton of probabilities in [0, 1].

    Each iteration erodes once; a structure of half-thickness h needs more than h iterations
    before its skeleton appears: with too few the skeleton of a sheet is empty.
    """
    skel = F.relu(x - soft_dilate(soft_erode(x)))
    for _ in range(iterations):
        x = soft_erode(x)
        delta = F.relu(x - soft_dilate(soft_erode(x)))
        skel = skel + F.relu(delta - skel * delta)
    return skel


class ClDiceLoss(nn.Module):
    """1 - clDice: harmonic mean of topology precision and sensitivity.

    Tprec = sum(S(p) g) / sum(S(p)), Tsens = sum(S(g) p) / sum(S(g)), with S the soft
    skeleton over ``iterations`` erosions, p = sigmoid(logits) and g the surface target, both
    zeroed outside valid voxels (so unlabeled voxels never shape either skeleton), and
    ``smooth`` added to each ratio. When the stored skeleton target is there, S(g) is its
    medial surface (exact for a binary target, and half the work); otherwise the soft skeleton
    of g. ``iterations`` must exceed the sheet half-thickness (2-4 voxel sheets: >= 2); when
    the target skeleton comes out empty the term carries no signal, and a warning says so.
    """

    def __init__(self, iterations: int = 3, smooth: float = 1.0) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"clDice iterations must be >= 1, got {iterations}")
        self.iterations, self.smooth = int(iterations), float(smooth)
        self._warned = False

    @float32_term
    def forward(self, logits: torch.Tensor, t: Targets) -> TermValue:
        valid = t.valid.float()
        p = torch.sigmoid(logits) * valid
        g = t.fg * valid
        skel_p = soft_skeleton(p, self.iterations)
        if t.skeleton is not None:
            skel_g = (t.skeleton == SKELETON_SURFACE).float() * valid
        else:
            skel_g = soft_skeleton(g, self.iterations)
        if not self._warned and float(g.sum()) > 0 and float(skel_g.sum()) == 0:
            warnings.warn(
                f"clDice: the target skeleton is empty with iterations={self.iterations}: too "
                "few for the sheet thickness, so clDice gives no signal; raise "
                "cldice_iterations above the sheet half-thickness", stacklevel=2)
            self._warned = True
        s = self.smooth
        sp, sg = masked_sum(skel_p, valid), masked_sum(skel_g, valid)
        hit_p, hit_g = masked_sum(skel_p * g, valid), masked_sum(skel_g * p, valid)

        def loss(hp, spp, hg, sgg):
            tprec = (hp + s) / (spp + s)
            tsens = (hg + s) / (sgg + s)
            return 1 - 2 * tprec * tsens / (tprec + tsens)

        return TermValue(loss(hit_p.sum(), sp.sum(), hit_g.sum(), sg.sum()),
                         loss(hit_p, sp, hit_g, sg))
