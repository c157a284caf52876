"""Validation by the competition metric, guarded so that predicting nothing cannot win.

Whole validation volumes (or centred crops) are predicted by sliding windows, thresholded at
0.5 and scored with ``score_volume``. An empty prediction scores ~0.65 on a region whose octants
each hold one sheet (TopoScore 1.0: no active dimension), more than a weak real model, so a
volume whose prediction is nearly empty scores 0 for model selection, and the run compares its
best score with what an empty prediction scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vesuvius_data import VolumeStore
from vesuvius_data.metrics import score_volume

from .config import Config
from .inference import predict_volume

__all__ = ["MIN_PREDICTED_SHARE", "validation_boxes", "guarded_score", "competition_score",
           "empty_prediction_score"]


#: a validation volume whose prediction holds less than this share of its label's surface voxels
#: (on labeled voxels) scores 0 for model selection: an empty prediction scores ~0.65 where each
#: octant holds one sheet (TopoScore 1.0, no active dimension), more than a weak real model
MIN_PREDICTED_SHARE = 0.1
COMPETITION_PARTS = ("score", "topo_score", "surface_dice", "voi_score")


def validation_boxes(store: VolumeStore, val_ids: list[str], crop: int) -> dict[str, tuple]:
    """The region of each validation volume that the metric scores: whole (crop 0) or a centred
    cube of side ``crop``."""
    def centred(n: int) -> slice:
        side = min(crop or n, n)
        return slice((n - side) // 2, (n - side) // 2 + side)

    return {vid: tuple(centred(n) for n in store.info(vid).shape) for vid in val_ids}


def guarded_score(pred: np.ndarray, label: np.ndarray, spec) -> tuple[Any, bool]:
    """(score_volume result, degenerate): degenerate when the prediction is (nearly) empty
    where the label has surface."""
    result = score_volume(pred, label)
    surface = int(np.count_nonzero(label == spec.foreground))
    predicted = int(np.count_nonzero(pred & (label != spec.ignore)))
    return result, surface > 0 and predicted < MIN_PREDICTED_SHARE * surface


def competition_score(model, store: VolumeStore, boxes: dict[str, tuple], cfg: Config,
                       device: torch.device) -> dict[str, float]:
    """Mean competition score (and its parts) of thresholded sliding-window predictions on the
    validation regions; ``score`` counts degenerate volumes as 0 (see MIN_PREDICTED_SHARE)."""
    parts, selection, degenerate = [], [], 0
    for vid, box in boxes.items():
        prob = predict_volume(model, np.asarray(store.image(vid)[box]), (cfg.patch_size,) * 3,
                              overlap=0.25, batch_size=cfg.batch_size, device=device)
        result, bad = guarded_score(prob >= 0.5, np.asarray(store.label(vid)[box]),
                                     store.label_spec)
        parts.append(result)
        selection.append(0.0 if bad else result.score)
        degenerate += bad
    out = {k: float(np.mean([getattr(p, k) for p in parts])) for k in COMPETITION_PARTS}
    return out | {"raw_score": out["score"], "score": float(np.mean(selection)),
                  "degenerate": degenerate}


def empty_prediction_score(store: VolumeStore, boxes: dict[str, tuple]) -> float:
    """What predicting nothing scores on the validation regions (the metric's baseline)."""
    scores = []
    for vid, box in boxes.items():
        label = np.asarray(store.label(vid)[box])
        scores.append(score_volume(np.zeros(label.shape, bool), label).score)
    return float(np.mean(scores))
