"""Choose the threshold and post-processing by the competition metric, on saved probabilities.

    python tools/tune_postprocess.py PROB_DIR LABELS [--thresholds 0.3,0.4,0.5,0.6,0.7]
        [--min-components 0,100,1000] [--max-holes 0,100] [--json]

PROB_DIR holds the {id}.tif probabilities that ``tools/predict.py --probabilities`` wrote
(float16, or uint8 = round(255 p)); LABELS is a folder of {id}.tif labels or a VolumeStore. Every
combination is applied to every volume (``trainer.inference.postprocess``) and scored with
``score_volume``; the table lists the mean score and its parts per combination, best first, and
the last line is the ``tools/predict.py`` flags of the best one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from trainer.inference import decode_probabilities, postprocess
from vesuvius_data.metrics import score_volume
from vesuvius_data.volume_sources import pair_ids, volume_sources

PARTS = ("score", "topo_score", "surface_dice", "voi_score")


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def tune(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], thresholds, min_components,
         max_holes) -> list[dict]:
    """Mean score and parts per (threshold, min_component, max_hole), best first."""
    combos = list(itertools.product(thresholds, min_components, max_holes))
    rows = []
    with tqdm(total=len(combos) * len(probs), desc="tune", unit="score", disable=None) as bar:
        for t, mc, mh in combos:
            scores = []
            for vid, prob in probs.items():
                scores.append(score_volume(postprocess(prob, t, mc, mh), labels[vid]))
                bar.update()
            rows.append({"threshold": t, "min_component": mc, "max_hole": mh,
                         **{k: float(np.mean([getattr(s, k) for s in scores])) for k in PARTS}})
    return sorted(rows, key=lambda r: -r["score"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("probabilities", type=Path)
    ap.add_argument("labels", type=Path)
    ap.add_argument("--thresholds", type=_floats, default=[0.3, 0.4, 0.5, 0.6, 0.7])
    ap.add_argument("--min-components", type=_ints, default=[0, 100, 1000])
    ap.add_argument("--max-holes", type=_ints, default=[0, 100])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        prob_src, label_src = volume_sources(args.probabilities), volume_sources(args.labels)
        ids = pair_ids(prob_src, label_src)
        probs = {vid: decode_probabilities(prob_src[vid].read()) for vid in ids}
        labels = {vid: label_src[vid].read() for vid in ids}
        for vid in ids:
            if probs[vid].shape != labels[vid].shape:
                raise ValueError(f"{vid}: probabilities {probs[vid].shape} and label "
                                 f"{labels[vid].shape} differ in shape")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = tune(probs, labels, args.thresholds, args.min_components, args.max_holes)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'threshold':>9} {'min_comp':>8} {'max_hole':>8} {'score':>7} {'topo':>7} "
          f"{'sdice':>7} {'voi':>7}")
    for r in rows:
        print(f"{r['threshold']:9.2f} {r['min_component']:8d} {r['max_hole']:8d} "
              f"{r['score']:7.4f} {r['topo_score']:7.4f} {r['surface_dice']:7.4f} "
              f"{r['voi_score']:7.4f}")
    best = rows[0]
    print(f"best over {len(ids)} volume(s): --threshold {best['threshold']} --min-component "
          f"{best['min_component']} --max-hole {best['max_hole']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
