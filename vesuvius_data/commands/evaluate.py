"""Score predicted masks against labels with the competition metric, volume by volume.

    vesuvius-evaluate PRED LABELS [--json] [--workers N] [--tau 2.0]

PRED is a folder of {id}.tif masks (what vesuvius-predict writes) or a submission .zip of them;
LABELS is a folder of {id}.tif label volumes (0 background, 1 surface, 2 unlabeled) or a
VolumeStore. Every prediction needs a label of the same shape; labels without a prediction are
an error too, since a missing file would silently raise the mean. Prints a table (score, the
three parts, the Betti bars) and the mean; --json prints the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vesuvius_data.cli import positive_int, user_errors
from vesuvius_data.metrics import VolumeScore, score_volume
from vesuvius_data.store.handles import VolumeHandle, pair_ids, volume_handles


def _score_one(vid: str, pred_src: VolumeHandle, label_src: VolumeHandle,
               tau: float) -> VolumeScore:
    pred, label = pred_src.read(), label_src.read()
    if pred.shape != label.shape:
        raise ValueError(f"{pred_src.name}: prediction {pred.shape} and label {label.shape} "
                         f"({label_src.name}) differ in shape")
    bad = np.setdiff1d(np.unique(label), [0, 1, 2])
    if bad.size:
        raise ValueError(f"{label_src.name}: label values {bad.tolist()} outside 0/1/2")
    # a store that recorded the voxel size scores in its unit (tau too); else in voxels
    return score_volume(pred, label, tau=tau, spacing=label_src.spacing() or (1.0, 1.0, 1.0))


def format_table(scores: dict[str, VolumeScore]) -> str:
    head = (f"{'id':>14} {'score':>7} {'topo':>7} {'sdice':>7} {'voi':>7}   "
            f"{'bars m/p/g dim0':>18} {'dim1':>12} {'dim2':>12}")
    lines = [head, "-" * len(head)]
    for vid, s in scores.items():
        bars = ["/".join(str(c[k]) for c in (s.betti.matched, s.betti.pred, s.betti.gt))
                for k in range(3)]
        lines.append(f"{vid:>14} {s.score:7.4f} {s.topo_score:7.4f} {s.surface_dice:7.4f} "
                     f"{s.voi_score:7.4f}   {bars[0]:>18} {bars[1]:>12} {bars[2]:>12}")
    mean = {k: float(np.mean([getattr(s, k) for s in scores.values()]))
            for k in ("score", "topo_score", "surface_dice", "voi_score")}
    lines.append("-" * len(head))
    lines.append(f"{'mean':>14} {mean['score']:7.4f} {mean['topo_score']:7.4f} "
                 f"{mean['surface_dice']:7.4f} {mean['voi_score']:7.4f}   ({len(scores)} volumes)")
    inexact = [vid for vid, s in scores.items() if s.betti.inexact_blocks]
    if inexact:
        lines.append(f"note: {len(inexact)} volume(s) have octants whose union has so many loops "
                     f"(noise-like masks) that their dim-1 matches are an upper bound: "
                     f"{inexact[:5]}")
    return "\n".join(lines)


@user_errors
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("pred", type=Path, help="folder of {id}.tif masks or a submission .zip")
    ap.add_argument("labels", type=Path, help="folder of {id}.tif labels or a VolumeStore")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--workers", type=positive_int, default=1,
                    help="score N volumes at once (processes)")
    ap.add_argument("--tau", type=float, default=2.0,
                    help="SurfaceDice tolerance, in voxels (in the labels' unit when their "
                    "store records a voxel spacing)")
    args = ap.parse_args(argv)
    preds, labels = volume_handles(args.pred), volume_handles(args.labels)
    ids = pair_ids(preds, labels, args.pred, args.labels)
    scores: dict[str, VolumeScore] = {}
    with tqdm(total=len(ids), desc="score", unit="vol", disable=None) as bar:
        if args.workers > 1:
            with ProcessPoolExecutor(args.workers) as pool:
                futures = {vid: pool.submit(_score_one, vid, preds[vid], labels[vid], args.tau)
                           for vid in ids}
                for vid in ids:
                    scores[vid] = futures[vid].result()
                    bar.update()
        else:
            for vid in ids:
                scores[vid] = _score_one(vid, preds[vid], labels[vid], args.tau)
                bar.update()
    if args.json:
        out = {"mean_score": float(np.mean([s.score for s in scores.values()])),
               "volumes": {vid: s.as_dict() for vid, s in scores.items()}}
        print(json.dumps(out, indent=1))
    else:
        print(format_table(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
