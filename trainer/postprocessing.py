"""Post-processing that travels with the model: chosen by the metric, stored, applied by default.

At the end of a run validated by the competition metric the trainer predicts its validation
volumes with ``best.pt`` and runs the repair search (``vesuvius_data.repair.tune``) on them;
cross-validation runs the same search on all out-of-fold predictions together. The choice is
stored as ``postprocessing.json`` (in the run folder or the model folder, and inside
``best.pt``) with the score it reached and the score of a plain 0.5 threshold on the same
volumes, and ``vesuvius-predict`` applies it unless told otherwise.

The file is data: JSON with known keys only; an unknown key, a wrong type or a value
``RepairConfig`` refuses is a one-line error naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vesuvius_data._atomic import atomic_write
from vesuvius_data.metrics import score_volume
from vesuvius_data.repair import RepairConfig
from vesuvius_data.repair.tune import config_of, search_stages, tune

__all__ = ["POSTPROCESSING_FILE", "SEARCHES", "Postprocessing", "choose_postprocessing",
           "read_postprocessing", "write_postprocessing", "store_run_postprocessing"]

POSTPROCESSING_FILE = "postprocessing.json"
#: the searches a run can end with (``postprocess_search``): the whole one of ``vesuvius-tune``
#: (70 configs), or 16 of them for short runs: no hysteresis or bridge cutting (on the
#: yardstick's held-out volumes they cost 0.09 and 0.21 where the search was made to add them)
SEARCHES = {
    "full": search_stages(),
    "quick": search_stages(sheet_sigmas=(0.0, 1.5), thresholds=(0.4, 0.5, 0.6),
                           weak_thresholds=(None,), split_seeds=(None,),
                           min_components=(0, 10, 100), dust_connectivities=(6,),
                           patch_areas=(0, 64)),
}


@dataclass(frozen=True)
class Postprocessing:
    """A repair config and the evidence for it (mean scores on the volumes it was tuned on)."""

    repair: RepairConfig
    score: float  # mean competition score with ``repair``
    threshold_only: float  # mean score of p > 0.5 alone, on the same volumes
    tuned_on: list[str] = field(default_factory=list)  # volume ids
    source: str = ""  # "validation volumes of run ..." | "out-of-fold predictions of N folds"

    def to_dict(self) -> dict[str, Any]:
        return {"repair": dataclasses.asdict(self.repair), "score": self.score,
                "threshold_only": self.threshold_only, "tuned_on": list(self.tuned_on),
                "source": self.source}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Postprocessing:
        """Checked: ``where`` (the file, or the checkpoint) names the culprit in every error."""
        known = {f.name for f in dataclasses.fields(cls)}
        repair_keys = {f.name for f in dataclasses.fields(RepairConfig)}
        if not isinstance(d, dict) or not isinstance(d.get("repair"), dict):
            raise ValueError(f"{where}: not a post-processing config (a mapping with 'repair', "
                             "'score', 'threshold_only')")
        unknown = sorted(set(d) - known) + sorted(f"repair.{k}" for k in set(d["repair"]) -
                                                   repair_keys)
        if unknown:
            raise ValueError(f"{where}: unknown post-processing key(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(known))} and repair.{{"
                             f"{', '.join(sorted(repair_keys))}}}")
        try:
            repair = RepairConfig(**d["repair"])
            _check_types(repair)
            return cls(repair=repair, score=float(d.get("score", float("nan"))),
                       threshold_only=float(d.get("threshold_only", float("nan"))),
                       tuned_on=[str(v) for v in d.get("tuned_on", [])],
                       source=str(d.get("source", "")))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: bad post-processing config: {e}") from None

    def describe(self) -> str:
        """One line: what is applied and what it scored where it was chosen."""
        gain = (f"; it scored {self.score:.4f} against {self.threshold_only:.4f} for "
                f"threshold 0.5 alone on {len(self.tuned_on)} volume(s)"
                if np.isfinite(self.score) and self.tuned_on else "")
        return f"{self.repair.to_flags()}{gain}"


def _check_types(c: RepairConfig) -> None:
    """JSON can say ``"threshold": "high"``; ``RepairConfig`` itself does not check types."""
    for f in dataclasses.fields(c):
        v = getattr(c, f.name)
        ok = {"float": isinstance(v, (int, float)) and not isinstance(v, bool),
              "int": isinstance(v, int) and not isinstance(v, bool),
              "bool": isinstance(v, bool)}
        kind = str(f.type).replace(" | None", "")
        if v is None and "None" in str(f.type):
            continue
        if kind in ok and not ok[kind]:
            raise TypeError(f"{f.name} must be {f.type}, got {v!r}")


def read_postprocessing(path: str | os.PathLike[str]) -> Postprocessing:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable post-processing config ({e})") from None
    return Postprocessing.from_dict(data, str(path))


def write_postprocessing(path: str | os.PathLike[str], pp: Postprocessing) -> None:
    with atomic_write(path) as f:
        f.write((json.dumps(pp.to_dict(), indent=1) + "\n").encode())


def choose_postprocessing(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                          source: str, stages: list[list[dict]] | None = None,
                          progress: bool = True) -> tuple[Postprocessing, list[dict]]:
    """The repair search on these probabilities; the choice with its evidence, and every row
    the search tried (``tune``'s table)."""
    rows = tune(probs, labels, search_stages() if stages is None else stages, progress)
    plain = float(np.mean([score_volume(probs[v] > 0.5, labels[v]).score for v in probs]))
    return Postprocessing(config_of(rows[0]), rows[0]["score"], plain, sorted(probs),
                          source), rows


def store_run_postprocessing(out: Path, store: Any, boxes: dict[str, tuple], cfg: Any,
                             device: Any, log: Any) -> Postprocessing:
    """End of a run: ``best.pt``'s predictions of the validation regions, the repair search
    on them, and the choice written into ``best.pt`` and ``OUT/postprocessing.json`` (last:
    its presence means done, so a killed search reruns on resume)."""
    from .checkpoint import load_checkpoint, save_checkpoint
    from .inference import predict_volume
    from .model_folder import model_of_checkpoint

    best = out / "best.pt"
    ck = load_checkpoint(best)
    model, patch = model_of_checkpoint(ck, best)
    log(f"choosing post-processing ({cfg.postprocess_search} search) on best.pt's predictions "
        f"of {len(boxes)} validation volume(s)"
        + (f" (centred {cfg.metric_crop}^3 cubes)" if cfg.metric_crop else ""))
    probs, labels = {}, {}
    for vid, box in boxes.items():
        probs[vid] = predict_volume(model, np.asarray(store.image(vid)[box]), (patch,) * 3,
                                    overlap=0.5, batch_size=cfg.batch_size, device=device)
        labels[vid] = np.asarray(store.label(vid)[box])
    pp, _ = choose_postprocessing(probs, labels, f"validation volumes of {out}",
                                  SEARCHES[cfg.postprocess_search])
    ck["postprocessing"] = pp.to_dict()
    save_checkpoint(best, ck)
    write_postprocessing(out / POSTPROCESSING_FILE, pp)
    log(f"post-processing: {pp.describe()} -> {out / POSTPROCESSING_FILE} and best.pt "
        "(vesuvius-predict applies it by default)")
    return pp

