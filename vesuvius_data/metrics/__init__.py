"""The competition metric: TopoScore, SurfaceDice@tau and VOI, and their weighted score.

``score_volume(pred, gt)`` is the entry point; the three parts live in their own modules.
"""

from .score import SCORE_WEIGHTS, VolumeScore, score_volume, score_volumes
from .surface_dice import surface_dice
from .topology import BettiCounts, betti_counts, octant_slices, topo_score_from_counts
from .voi import VoiResult, binarize_pair, variation_of_information, voi_of_masks

__all__ = [
    "SCORE_WEIGHTS", "BettiCounts", "VoiResult", "VolumeScore", "betti_counts", "binarize_pair",
    "octant_slices", "score_volume", "score_volumes", "surface_dice", "topo_score_from_counts",
    "variation_of_information", "voi_of_masks",
]
