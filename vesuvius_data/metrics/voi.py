"""Variation of information between the connected components of prediction and ground truth.

Rules (as the competition scorer applies them): ground-truth-2 voxels are zeroed in both
inputs first; then both are binarised as != 0; components are
26-connected; the entropies are taken over the union of both foregrounds, where background (0)
is a cluster like any other; log base 2; score = 1 / (1 + alpha * VOI) with alpha = 0.3.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np

__all__ = ["VoiResult", "binarize_pair", "variation_of_information", "voi_of_masks"]

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
    """Boolean (prediction, ground truth): ``!= 0`` once ground-truth-ignore voxels are zeroed."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    keep = gt != ignore
    return (pred != 0) & keep, (gt != 0) & keep


def _entropy(counts: np.ndarray, n: int) -> float:
    p = counts[counts > 0].astype(np.float64) / n
    return float(-(p * np.log2(p)).sum())


def _split_merge(a: np.ndarray, na: int, b: np.ndarray, nb: int) -> tuple[float, float]:
    """(H(a | b), H(b | a)) in bits for two label arrays (0..na, 0..nb) over the same voxels.

    H(a | b) = H(a, b) - H(b); the joint histogram is a bincount of a * (nb + 1) + b when that
    fits in memory, else np.unique of the same keys.
    """
    n = a.size
    keys = a.astype(np.int64) * (nb + 1) + b
    if (na + 1) * (nb + 1) <= 1 << 26:
        joint = np.bincount(keys, minlength=(na + 1) * (nb + 1))
    else:
        joint = np.unique(keys, return_counts=True)[1]
    h_ab = _entropy(joint, n)
    h_a = _entropy(np.bincount(a, minlength=na + 1), n)
    h_b = _entropy(np.bincount(b, minlength=nb + 1), n)
    return h_ab - h_b, h_ab - h_a


def variation_of_information(pred: np.ndarray, gt: np.ndarray, *, ignore: int = 2,
                             alpha: float = 0.3) -> VoiResult:
    """VOI between 26-connected components, over the union of foregrounds (see module)."""
    p, g = binarize_pair(pred, gt, ignore)
    return voi_of_masks(p, g, alpha=alpha)


def voi_of_masks(p: np.ndarray, g: np.ndarray, *, alpha: float = 0.3) -> VoiResult:
    """VOI of two boolean masks that are already binarised and ignore-masked."""
    union = p | g
    if not union.any():
        return VoiResult(0.0, 0.0, 1.0)
    lp, n_p = cc3d.connected_components(p, connectivity=26, return_N=True)
    lg, n_g = cc3d.connected_components(g, connectivity=26, return_N=True)
    split, merge = _split_merge(lp[union], int(n_p), lg[union], int(n_g))
    split, merge = max(split, 0.0), max(merge, 0.0)  # -1e-16 from float cancellation
    return VoiResult(split, merge, 1.0 / (1.0 + alpha * (split + merge)))
