"""Choose post-processing by the competition metric: a greedy search over ``RepairConfig``.

The search runs in the order ``repair`` applies its steps: first every threshold with every
weak (hysteresis) threshold below it, for every in-plane smoothing (smoothing moves the best
threshold, so the two are searched together; each volume is smoothed once per sigma), then,
keeping the best so far, each repair step's candidates in turn (bridge cutting, dust size x
connectivity, plugging, hole patching areas, cavity sizes). Every candidate is applied to
every volume and scored with ``score_volume``; of candidates within ``TIE`` of the best mean
score, the one listed first wins (most steps list "off" first, so a step must earn its place).
Cavity filling is listed on first: a papyrus sheet encloses no cavity, so filling small ones
stays on unless it costs score.

Used by ``vesuvius-tune`` (on saved probabilities), by the trainer at the end of a run (on its
validation volumes) and by cross-validation (on all out-of-fold volumes together).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..metrics import score_volume
from . import RepairConfig, repair
from .smooth import smooth_along_sheets

__all__ = ["TIE", "PARTS", "search_stages", "tune", "config_of", "CachedRepair"]

PARTS = ("score", "topo_score", "surface_dice", "voi_score")
#: mean scores closer than this are a tie (the first candidate listed wins): filling a 14-voxel
#: pocket moved a validation volume's score by 1.5e-5, which is not evidence either way
TIE = 1e-3


def search_stages(sheet_sigmas: Sequence[float] = (0.0, 1.5, 2.5),
                  thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.55, 0.6, 0.7),
                  weak_thresholds: Sequence[float | None] = (None, 0.2, 0.3),
                  split_seeds: Sequence[float | None] = (None, 0.9, 0.95, 0.99, 0.995),
                  min_components: Sequence[int] = (0, 10, 100, 1000),
                  dust_connectivities: Sequence[int] = (6, 26), plug: str = "both",
                  patch_areas: Sequence[int] = (0, 16, 64),
                  max_cavities: Sequence[int] = (100, 0)) -> list[list[dict]]:
    """Candidate field updates per greedy stage, in the order ``repair`` applies the steps;
    the defaults are the search every tool runs."""
    first = [{"sheet_sigma": s, "threshold": t, "weak_threshold": w} for s in sheet_sigmas
             for t in thresholds for w in weak_thresholds if w is None or w < t]
    plugs = {"both": [False, True], "on": [True], "off": [False]}[plug]
    stages = [first,
              [{"split_seed": s} for s in split_seeds if s is None or s > 0],
              [{"min_component": m, "dust_connectivity": c} for m in min_components
               for c in (dust_connectivities if m else dust_connectivities[:1])],
              [{"plug": p} for p in plugs],
              [{"patch_area": n} for n in patch_areas],
              [{"max_cavity": n} for n in max_cavities]]
    for update in (u for s in stages for u in s if "split_seed" not in u):
        RepairConfig(**{**dataclasses.asdict(RepairConfig()), **update})  # checks values
    return stages


class CachedRepair:
    """``repair`` of named probability volumes that smooths each one once per sigma: the
    search and the benchmark's ablation try many configs on the same smoothing."""

    def __init__(self, probs: dict[str, np.ndarray]) -> None:
        self.probs, self._smoothed = probs, {}

    def __call__(self, vid: str, config: RepairConfig) -> np.ndarray:
        sigma = config.sheet_sigma
        if not sigma:
            return repair(self.probs[vid], config)
        if (vid, sigma) not in self._smoothed:
            self._smoothed[vid, sigma] = smooth_along_sheets(self.probs[vid], sigma)
        return repair(self._smoothed[vid, sigma], dataclasses.replace(config, sheet_sigma=0.0))


def tune(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray],
         stages: list[list[dict]] | None = None, progress: bool = True) -> list[dict]:
    """Greedy search: each stage tries its updates on the best config so far (of scores
    within ``TIE`` of the best, the first candidate listed). Returns one row per distinct
    config tried (its fields and mean score parts): the chosen one first, then the others by
    score."""
    stages = search_stages() if stages is None else stages
    best, tried, repairer = RepairConfig(), {}, CachedRepair(probs)

    def evaluate(config: RepairConfig) -> dict:
        if config not in tried:
            scores = [score_volume(repairer(vid, config), labels[vid]) for vid in probs]
            tried[config] = {**dataclasses.asdict(config),
                             **{k: float(np.mean([getattr(s, k) for s in scores])) for k in PARTS},
                             "flags": config.to_flags()}
            bar.update()
        return tried[config]

    total = sum(len(s) for s in stages)
    with tqdm(total=total, desc="tune", unit="config", disable=None if progress else True) as bar:
        for updates in stages:
            candidates = [c for c in (_replaced(best, u) for u in updates) if c] or [best]
            top = max(evaluate(c)["score"] for c in candidates)
            best = next(c for c in candidates if evaluate(c)["score"] >= top - TIE)
    chosen = tried[best]
    return [chosen] + sorted((r for r in tried.values() if r is not chosen),
                             key=lambda r: -r["score"])


def _replaced(config: RepairConfig, update: dict) -> RepairConfig | None:
    """``config`` with ``update``, or None where the two do not fit (a bridge-cutting seed
    below the threshold chosen by an earlier stage)."""
    try:
        return dataclasses.replace(config, **update)
    except ValueError:
        return None


def config_of(row: dict) -> RepairConfig:
    """The ``RepairConfig`` of a row that ``tune`` returned."""
    return RepairConfig(**{f.name: row[f.name] for f in dataclasses.fields(RepairConfig)})
