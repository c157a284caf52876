"""The competition score of one volume and the mean over volumes.

score = 0.30 TopoScore + 0.35 SurfaceDice@2 + 0.35 VOI score, with ground-truth-2 voxels zeroed in
both inputs first and the prediction binarised as ``!= 0`` (see ``DESIGN.md`` section 7 for the
rules and the module docstrings of the three parts for how each is computed).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from .surface_dice import surface_dice
from .topology import BettiCounts, betti_counts, topo_score_from_counts
from .voi import binarize_pair, voi_of_masks

__all__ = ["VolumeScore", "score_volume", "score_volumes"]

#: weights of (TopoScore, SurfaceDice, VOI score) in the competition score
SCORE_WEIGHTS = (0.30, 0.35, 0.35)


@dataclass(frozen=True)
class VolumeScore:
    """The competition score of one volume and everything it was made of."""

    score: float
    topo_score: float
    surface_dice: float
    voi_score: float
    voi_split: float
    voi_merge: float
    betti: BettiCounts  # matched / predicted / ground-truth bars per dimension, over octants
    topo_f1: tuple[float, float, float]  # NaN where a dimension is inactive
    seconds: dict[str, float] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict:
        """Flat, JSON-ready form (NaN F1 values become None)."""
        d = asdict(self)
        d["topo_f1"] = [None if np.isnan(v) else v for v in self.topo_f1]
        return d


def score_volume(pred: np.ndarray, gt: np.ndarray, *, ignore: int = 2, tau: float = 2.0,
                 voi_alpha: float = 0.3, weights: Sequence[float] = SCORE_WEIGHTS,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> VolumeScore:
    """Score a predicted volume against its label volume (values 0/1/2) like the leaderboard.

    Example:
        >>> gt = np.zeros((64, 64, 64), np.uint8); gt[10] = 1
        >>> score_volume(gt, gt).score
        1.0
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.ndim != 3:
        raise ValueError(f"score_volume needs 3-D volumes, got shape {pred.shape}")
    for name, a in (("prediction", pred), ("ground truth", gt)):
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ValueError(f"{name} must be numeric or boolean, got dtype {a.dtype}")
    if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"weights must be three non-negative numbers, got {tuple(weights)}")
    seconds = {}
    t = time.perf_counter()
    p, g = binarize_pair(np.nan_to_num(pred) if pred.dtype.kind == "f" else pred, gt, ignore)
    seconds["binarize"] = time.perf_counter() - t

    def timed(name, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds[name] = time.perf_counter() - start
        return result

    # SurfaceDice and VOI run beside the topology: the kernels release the GIL, so on 2 cores
    # the total is less than the sum of the parts (benchmarks/bench_metric.py)
    with ThreadPoolExecutor(1) as pool:
        side = pool.submit(lambda: (
            timed("surface_dice", surface_dice, p, g, tau=tau, spacing=spacing),
            timed("voi", voi_of_masks, p, g, alpha=voi_alpha)))
        betti = timed("topo", betti_counts, p, g)
        sd, voi = side.result()
    topo, f1 = topo_score_from_counts(betti)

    total = sum(float(x) for x in weights)  # the scorer's float order, to the last bit
    w = [float(x) / total for x in weights]
    score = w[0] * float(topo) + w[1] * sd + w[2] * float(voi.score)
    return VolumeScore(score, topo, sd, voi.score, voi.split, voi.merge, betti, f1, seconds)


def score_volumes(pairs: Iterable[tuple[np.ndarray, np.ndarray]], **kwargs) -> tuple[
        float, list[VolumeScore]]:
    """(mean score, per-volume scores) over (prediction, ground truth) pairs."""
    scores = [score_volume(p, g, **kwargs) for p, g in pairs]
    if not scores:
        raise ValueError("score_volumes got no volumes")
    return float(np.mean([s.score for s in scores])), scores
