"""Choose the threshold and topology repair by the competition metric, on saved probabilities.

    python tools/tune_postprocess.py PROB_DIR LABELS [--sheet-sigmas 0,1.5,2.5]
        [--thresholds 0.3,0.4,0.5,0.55,0.6,0.7] [--weak-thresholds none,0.2,0.3]
        [--min-components 0,10,100,1000]
        [--dust-connectivities 6,26] [--plug both] [--patch-areas 0,16,64]
        [--max-cavities 100,0] [--json]

PROB_DIR holds the {id}.tif probabilities that ``tools/predict.py --probabilities`` wrote
(float16, or uint8 = round(255 p)); LABELS is a folder of {id}.tif labels or a VolumeStore.
The search is greedy, in the order the steps run (``vesuvius_data.repair``): first every
threshold with every weak (hysteresis) threshold below it, for every in-plane smoothing
(``--sheet-sigmas``: smoothing moves the best threshold, so the two are searched together;
each volume is smoothed once per sigma), then, keeping the best so far, each
repair step's candidates in turn (dust size x connectivity, plugging off/on, hole patching
areas, cavity sizes). Every candidate is applied to every volume and scored with
``score_volume``; of candidates within 0.001 of the best mean score, the one listed first
wins (most steps list "off" first, so a step must earn its place). Cavity filling is listed
first by default: a papyrus sheet encloses no cavity (no label volume holds one), so filling
small ones stays on unless it costs score, and a volume whose prediction happens to hold one
is not charged a whole TopoScore dimension for it. The table lists each tried config's mean
score and parts, the chosen one first and the others by score, and the last line is the
``tools/predict.py`` flags of the chosen one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from trainer.inference import decode_probabilities
from vesuvius_data.cli import user_errors
from vesuvius_data.metrics import score_volume
from vesuvius_data.repair import RepairConfig, repair, smooth_along_sheets
from vesuvius_data.store.handles import pair_ids, volume_handles

PARTS = ("score", "topo_score", "surface_dice", "voi_score")
#: mean scores closer than this are a tie (the first candidate listed wins): filling a 14-voxel
#: pocket moved a validation volume's score by 1.5e-5, which is not evidence either way
TIE = 1e-3


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _weak(text: str) -> list[float | None]:
    return [None if x.strip().lower() == "none" else float(x) for x in text.split(",")
            if x.strip()]


def _stages(a: argparse.Namespace) -> list[list[dict]]:
    """Candidate field updates per greedy stage, in the order ``repair`` applies the steps."""
    first = [{"sheet_sigma": s, "threshold": t, "weak_threshold": w} for s in a.sheet_sigmas
             for t in a.thresholds for w in a.weak_thresholds if w is None or w < t]
    plug = {"both": [False, True], "on": [True], "off": [False]}[a.plug]
    return [first,
            [{"split_seed": s} for s in a.split_seeds if s is None or s > 0],
            [{"min_component": m, "dust_connectivity": c} for m in a.min_components
             for c in (a.dust_connectivities if m else a.dust_connectivities[:1])],
            [{"plug": p} for p in plug],
            [{"patch_area": n} for n in a.patch_areas],
            [{"max_cavity": n} for n in a.max_cavities]]


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
         stages: list[list[dict]]) -> list[dict]:
    """Greedy search: each stage tries its updates on the best config so far (of scores
    within ``TIE`` of the best, the first candidate listed). Returns one row per distinct
    config tried (its fields and mean score parts): the chosen one first, then the others by
    score."""
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
    with tqdm(total=total, desc="tune", unit="config", disable=None) as bar:
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


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("probabilities", type=Path)
    ap.add_argument("labels", type=Path)
    ap.add_argument("--sheet-sigmas", type=_floats, default=[0.0, 1.5, 2.5],
                    help="in-plane smoothing candidates (voxels); 0 = off")
    ap.add_argument("--thresholds", type=_floats, default=[0.3, 0.4, 0.5, 0.55, 0.6, 0.7])
    ap.add_argument("--weak-thresholds", type=_weak, default=[None, 0.2, 0.3],
                    help="hysteresis candidates below each threshold; 'none' = off")
    ap.add_argument("--split-seeds", type=_weak, default=[None, 0.9, 0.95, 0.99, 0.995],
                    help="bridge-cutting seed thresholds; 'none' = off")
    ap.add_argument("--min-components", type=_ints, default=[0, 10, 100, 1000])
    ap.add_argument("--dust-connectivities", type=_ints, default=[6, 26])
    ap.add_argument("--plug", choices=("both", "on", "off"), default="both")
    ap.add_argument("--patch-areas", type=_ints, default=[0, 16, 64])
    ap.add_argument("--max-cavities", "--max-holes", dest="max_cavities", type=_ints,
                    default=[100, 0])
    ap.add_argument("--json", action="store_true")
    return ap


def default_stages() -> list[list[dict]]:
    """The greedy search's stages with this tool's default candidates."""
    return _stages(_parser().parse_args(["PROB_DIR", "LABELS"]))


def config_of(row: dict) -> RepairConfig:
    """The ``RepairConfig`` of a row that ``tune`` returned."""
    return RepairConfig(**{f.name: row[f.name] for f in dataclasses.fields(RepairConfig)})


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stages = _stages(args)
    for update in (u for s in stages for u in s if "split_seed" not in u):
        RepairConfig(**{**dataclasses.asdict(RepairConfig()), **update})  # checks values
    prob_src, label_src = volume_handles(args.probabilities), volume_handles(args.labels)
    ids = pair_ids(prob_src, label_src)
    probs = {vid: decode_probabilities(prob_src[vid].read()) for vid in ids}
    labels = {vid: label_src[vid].read() for vid in ids}
    for vid in ids:
        if probs[vid].shape != labels[vid].shape:
            raise ValueError(f"{vid}: probabilities {probs[vid].shape} and label "
                             f"{labels[vid].shape} differ in shape")
    rows = tune(probs, labels, stages)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'score':>7} {'topo':>7} {'sdice':>7} {'voi':>7}  flags")
    for r in rows:
        print(f"{r['score']:7.4f} {r['topo_score']:7.4f} {r['surface_dice']:7.4f} "
              f"{r['voi_score']:7.4f}  {r['flags']}")
    print(f"best over {len(ids)} volume(s): {rows[0]['flags']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
