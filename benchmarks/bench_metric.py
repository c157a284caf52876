"""Seconds to score one synthetic 320^3 volume, per part of the metric; prints JSON.

    python benchmarks/bench_metric.py [--size 320] [--repeats 3] [--no-baselines]

The prediction is the label's surface, thickened by one voxel, with 2 % of its voxels dropped
and 0.1 % random specks: many small components, holes and cavities, a hard case for the
topology. Baselines, timed in the same run on the same volume:
- SurfaceDice with ``surface_distance`` (the scorer's own code path: full EDTs);
- VOI the plain way: scipy 26-connected labels and ``np.unique`` over label pairs;
- the bars of prediction, ground truth and union per octant with Cubical Ripser (persistence
  only, no matching: a lower bound for any persistence-based TopoScore).
The official scorer takes about 70 s per 320^3 volume on this 2-core machine (issue 7);
its Betti-Matching-3D build is not on PyPI, so it is not timed here. Medians of ``repeats``.

Also, on the same machine:
- ``many_loops``: the hard preset (2-voxel sheets) with 60 holes punched into the label and a
  prediction that drops 4 % of the label's voxels: thousands of loop classes per octant, the
  case that used to fall back to an upper bound. Time, peak memory growth, loops per octant.
- ``first_call``: a fresh interpreter scoring a 32^3 volume with an empty numba cache (what a
  new install pays once: compilation) and again with the cache filled.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import numpy as np
from scipy import ndimage

from vesuvius_data.metrics import betti_counts, octant_slices, surface_dice, voi_of_masks
from vesuvius_data.metrics._loops import LoopGenerators
from vesuvius_data.metrics.score import score_volume
from vesuvius_data.metrics.voi import binarize_pair
from vesuvius_data.synthetic import make_volume


def make_case(size: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    _, label = make_volume((size,) * 3, seed=seed)
    rng = np.random.default_rng(seed)
    pred = ndimage.binary_dilation(label == 1, iterations=1) & (rng.random(label.shape) > 0.02)
    pred |= rng.random(label.shape) < 0.001
    return pred.astype(np.uint8), label


def make_many_loops_case(size: int, seed: int = 1, holes: int = 60, drop: float = 0.04
                         ) -> tuple[np.ndarray, np.ndarray]:
    _, label = make_volume((size,) * 3, seed=seed, preset="hard")
    rng = np.random.default_rng(seed)
    zs, ys, xs = np.nonzero(label == 1)
    for i in rng.choice(zs.size, holes, replace=False):
        box = tuple(slice(max(c - 2, 0), c + 2) for c in (zs[i], ys[i], xs[i]))
        label[box] = np.where(label[box] == 1, 0, label[box])
    pred = (label == 1) & (rng.random(label.shape) > drop)
    return pred.astype(np.uint8), label


def _peak_growth_mb(fn) -> float:
    """Peak resident memory above the level before ``fn``, sampled every 10 ms."""
    import psutil

    proc = psutil.Process()
    base = peak = proc.memory_info().rss
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, proc.memory_info().rss)

    t = threading.Thread(target=watch)
    t.start()
    fn()
    done.set()
    t.join()
    return (peak - base) / 2**20


_FIRST_CALL = ("import time; t = time.perf_counter(); import numpy as np; "
               "from vesuvius_data.metrics.score import score_volume; "
               "rng = np.random.default_rng(0); g = (rng.random((32, 32, 32)) < 0.5); "
               "p = g ^ (rng.random(g.shape) < 0.1); score_volume(p.astype(np.uint8), "
               "g.astype(np.uint8)); print(time.perf_counter() - t)")


def _first_call_seconds() -> dict[str, float]:
    """Import + first score in a fresh interpreter: cold (empty numba cache), then warm."""
    with tempfile.TemporaryDirectory() as cache:
        env = os.environ | {"NUMBA_CACHE_DIR": cache}
        run = [sys.executable, "-c", _FIRST_CALL]
        cold = float(subprocess.run(run, env=env, capture_output=True, text=True,
                                    check=True).stdout)
        warm = float(subprocess.run(run, env=env, capture_output=True, text=True,
                                    check=True).stdout)
    return {"empty_numba_cache": cold, "cached": warm}


def _median(fn, repeats: int) -> float:
    fn()  # numba compilation and caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _scipy_voi(p: np.ndarray, g: np.ndarray) -> float:
    """VOI as one would first write it: scipy labels, joint histogram by np.unique."""
    union = p | g
    lp = ndimage.label(p, structure=np.ones((3, 3, 3), bool))[0][union]
    lg = ndimage.label(g, structure=np.ones((3, 3, 3), bool))[0][union]

    def entropy(*labels):
        counts = np.unique(np.stack(labels), axis=1, return_counts=True)[1] / union.sum()
        return float(-(counts * np.log2(counts)).sum())

    joint = entropy(lp, lg)
    return 2 * joint - entropy(lp) - entropy(lg)


def _cripser_bars(p: np.ndarray, g: np.ndarray) -> None:
    import cripser

    for box in octant_slices(p.shape):
        for m in (p[box], g[box], p[box] | g[box]):
            cripser.computePH(np.where(m, 0.0, 1.0), maxdim=2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-baselines", action="store_true")
    args = ap.parse_args(argv)
    pred, label = make_case(args.size)
    p, g = binarize_pair(pred, label)
    out: dict = {"size": args.size, "pred_foreground": float(p.mean()),
                 "gt_foreground": float(g.mean())}
    out["seconds"] = {
        "topo_score": _median(lambda: betti_counts(p, g), args.repeats),
        "surface_dice": _median(lambda: surface_dice(p, g), args.repeats),
        "voi": _median(lambda: voi_of_masks(p, g), args.repeats),
        "total": _median(lambda: score_volume(pred, label), args.repeats),
    }
    result = score_volume(pred, label)
    out["score"] = {"score": result.score, "topo": result.topo_score,
                    "surface_dice": result.surface_dice, "voi": result.voi_score,
                    "bars": {"matched": result.betti.matched, "pred": result.betti.pred,
                             "gt": result.betti.gt}}
    mp, mg = make_many_loops_case(args.size)
    bp, bg = binarize_pair(mp, mg)
    many = score_volume(mp, mg)
    loops = [LoopGenerators(np.ascontiguousarray(bp[b])).count for b in octant_slices(bp.shape)]
    out["many_loops"] = {
        "seconds": _median(lambda: score_volume(mp, mg), args.repeats),
        "peak_memory_growth_mb": _peak_growth_mb(lambda: score_volume(mp, mg)),
        "pred_loop_classes_per_octant": loops, "inexact_blocks": many.betti.inexact_blocks,
        "score": many.score, "topo": many.topo_score,
        "bars": {"matched": many.betti.matched, "pred": many.betti.pred, "gt": many.betti.gt}}
    out["first_call_seconds"] = _first_call_seconds()
    if not args.no_baselines:
        import surface_distance as sd

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            t_sd = _median(lambda: sd.compute_surface_dice_at_tolerance(
                sd.compute_surface_distances(g, p, (1.0, 1.0, 1.0)), 2.0), 1)
        t_rips = _median(lambda: _cripser_bars(p, g), 1)
        t_voi = _median(lambda: _scipy_voi(p, g), 1)
        out["baselines_seconds"] = {"surface_distance_edt": t_sd, "cripser_bars_only": t_rips,
                                    "voi_scipy_unique": t_voi, "official_scorer_issue7": 70.0}
        out["ratios"] = {"surface_dice_speedup": t_sd / out["seconds"]["surface_dice"],
                         "voi_speedup": t_voi / out["seconds"]["voi"],
                         "topo_speedup_vs_cripser_bars": t_rips / out["seconds"]["topo_score"],
                         "total_speedup_vs_official_70s": 70.0 / out["seconds"]["total"]}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
