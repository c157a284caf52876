"""Choose the threshold and topology repair by the competition metric, on saved probabilities.

    vesuvius-tune PROB_DIR LABELS    (or vesuvius-tune ...) [--sheet-sigmas 0,1.5,2.5]
        [--thresholds 0.3,0.4,0.5,0.55,0.6,0.7] [--weak-thresholds none,0.2,0.3]
        [--min-components 0,10,100,1000]
        [--dust-connectivities 6,26] [--plug both] [--patch-areas 0,16,64]
        [--max-cavities 100,0] [--json]

PROB_DIR holds the {id}.tif probabilities that ``vesuvius-predict --probabilities`` wrote
(float16, or uint8 = round(255 p)); LABELS is a folder of {id}.tif labels or a VolumeStore.
The search is the greedy one of ``vesuvius_data.repair.tune`` (the trainer runs the same one
at the end of a run and stores its choice with the model; cross-validation runs it on all
out-of-fold volumes): thresholds with hysteresis and in-plane smoothing together, then each
repair step in the order ``repair`` applies them; of candidates within 0.001 of the best mean
score the one listed first wins, so a step must earn its place. The table lists each tried
config's mean score and parts, the chosen one first and the others by score, and the last
line is the ``vesuvius-predict`` flags of the chosen one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainer.inference import decode_probabilities
from vesuvius_data.cli import user_errors
from vesuvius_data.repair.tune import search_stages, tune
from vesuvius_data.store.handles import pair_ids, volume_handles


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _weak(text: str) -> list[float | None]:
    return [None if x.strip().lower() == "none" else float(x) for x in text.split(",")
            if x.strip()]


def _parser() -> argparse.ArgumentParser:
    d = search_stages.__defaults__
    names = ("sheet_sigmas", "thresholds", "weak_thresholds", "split_seeds", "min_components",
             "dust_connectivities", "plug", "patch_areas", "max_cavities")
    default = dict(zip(names, d, strict=True))
    ap = argparse.ArgumentParser(prog="vesuvius-tune", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("probabilities", type=Path)
    ap.add_argument("labels", type=Path)
    ap.add_argument("--sheet-sigmas", type=_floats, default=list(default["sheet_sigmas"]),
                    help="in-plane smoothing candidates (voxels); 0 = off")
    ap.add_argument("--thresholds", type=_floats, default=list(default["thresholds"]))
    ap.add_argument("--weak-thresholds", type=_weak, default=list(default["weak_thresholds"]),
                    help="hysteresis candidates below each threshold; 'none' = off")
    ap.add_argument("--split-seeds", type=_weak, default=list(default["split_seeds"]),
                    help="bridge-cutting seed thresholds; 'none' = off")
    ap.add_argument("--min-components", type=_ints, default=list(default["min_components"]))
    ap.add_argument("--dust-connectivities", type=_ints,
                    default=list(default["dust_connectivities"]))
    ap.add_argument("--plug", choices=("both", "on", "off"), default=default["plug"])
    ap.add_argument("--patch-areas", type=_ints, default=list(default["patch_areas"]))
    ap.add_argument("--max-cavities", "--max-holes", dest="max_cavities", type=_ints,
                    default=list(default["max_cavities"]))
    ap.add_argument("--json", action="store_true")
    return ap


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stages = search_stages(args.sheet_sigmas, args.thresholds, args.weak_thresholds,
                           args.split_seeds, args.min_components, args.dust_connectivities,
                           args.plug, args.patch_areas, args.max_cavities)
    prob_src, label_src = volume_handles(args.probabilities), volume_handles(args.labels)
    ids = pair_ids(prob_src, label_src, args.probabilities, args.labels)
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
