"""The yardstick a model must beat: a percentile threshold of the smoothed image, tuned on
labels by the competition metric.

Papyrus is brighter than air and gaps, so thresholding a lightly smoothed image at a high
percentile (robust to each volume's brightness) and dropping dust finds most sheets. A model
that does not beat this tuned threshold on held-out volumes has learnt nothing the image
did not already say; the demo and ``benchmarks/bench_quality.py`` print both.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .metrics import score_volume
from .repair import remove_dust

__all__ = ["intensity_threshold", "tune_intensity_threshold"]


def intensity_threshold(image: np.ndarray, sigma: float, percentile: float,
                        dust: int = 0) -> np.ndarray:
    """``image`` smoothed by a Gaussian of ``sigma`` voxels, above its ``percentile``, without
    26-connected components under ``dust`` voxels."""
    x = np.asarray(image, np.float32)
    smooth = ndimage.gaussian_filter(x, sigma) if sigma else x
    return remove_dust(smooth > np.percentile(smooth, percentile), dust, 26)


def tune_intensity_threshold(images: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                             sigmas: Sequence[float] = (0.0, 0.7, 1.0, 1.5),
                             percentiles: Sequence[float] = (70, 75, 80, 85, 88, 91, 94),
                             dusts: Sequence[int] = (0, 100)) -> dict:
    """The grid point with the best mean score on these volumes: ``{"sigma", "percentile",
    "dust", "score"}`` (the first listed wins a tie). Each volume is smoothed once per sigma
    and its percentiles are taken in one pass, so the grid costs little more than its scores."""
    scores: dict[tuple, list[float]] = {}
    for v in images:
        for sigma in sigmas:
            x = np.asarray(images[v], np.float32)
            smooth = ndimage.gaussian_filter(x, sigma) if sigma else x
            cuts = np.percentile(smooth, percentiles)
            for pct, cut in zip(percentiles, cuts, strict=True):
                mask = smooth > cut
                for dust in dusts:
                    scores.setdefault((sigma, pct, dust), []).append(
                        score_volume(remove_dust(mask, dust, 26), labels[v]).score)
    best = None
    for sigma, pct, dust in itertools.product(sigmas, percentiles, dusts):
        s = float(np.mean(scores[sigma, pct, dust]))
        if best is None or s > best["score"]:
            best = {"sigma": sigma, "percentile": pct, "dust": dust, "score": s}
    return best
