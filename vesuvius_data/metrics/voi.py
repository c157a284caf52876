"""Variation of information between the connected components of prediction and ground truth.

Rules (as the competition scorer applies them): ground-truth-2 voxels are zeroed in both
inputs first; the prediction is binarised as != 0, the ground truth as == 1; components are
26-connected; the entropies are taken over the union of both foregrounds, where background (0)
is a cluster like any other; log base 2; score = 1 / (1 + alpha * VOI) with alpha = 0.3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["VoiResult", "binarize_pair", "variation_of_information"]

_26 = np.ones((3, 3, 3), bool)


@dataclass(frozen=True)
class VoiResult:
    split: float  # H(prediction | ground truth): ground-truth objects cut into pieces
    merge: float  # H(ground truth | prediction): ground-truth objects fused together
    score: float  # 1 / (1 + alpha * (split + merge))

    @property
    def voi(self) -> float:
        return self.split + self.merge


def binarize_pair(pred: np.ndarray, gt: np.ndarray, ignore: int = 2
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (prediction, ground truth) with ground-truth-ignore voxels zeroed in both."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    keep = gt != ignore
    return (pred != 0) & keep, (gt == 1) & keep


def _conditional_entropy(a: np.ndarray, b: np.ndarray) -> float:
    """H(a | b) in bits for two label arrays over the same voxels."""
    n = a.size
    if n == 0:
        return 0.0
    pairs = np.unique(np.stack([a, b]), axis=1, return_counts=True)[1].astype(np.float64)
    _, b_counts = np.unique(b, return_counts=True)
    p_ab, p_b = pairs / n, b_counts.astype(np.float64) / n
    return float(-(p_ab * np.log2(p_ab)).sum() + (p_b * np.log2(p_b)).sum())


def variation_of_information(pred: np.ndarray, gt: np.ndarray, *, ignore: int = 2,
                             alpha: float = 0.3) -> VoiResult:
    """VOI between 26-connected components, over the union of foregrounds (see module)."""
    p, g = binarize_pair(pred, gt, ignore)
    union = p | g
    if not union.any():
        return VoiResult(0.0, 0.0, 1.0)
    p_cc = ndimage.label(p, structure=_26)[0][union]
    g_cc = ndimage.label(g, structure=_26)[0][union]
    split, merge = _conditional_entropy(p_cc, g_cc), _conditional_entropy(g_cc, p_cc)
    return VoiResult(split, merge, 1.0 / (1.0 + alpha * (split + merge)))
