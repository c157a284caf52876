"""Seconds per topology-repair step on one 320^3 hard-preset volume; prints JSON.

    python benchmarks/bench_repair.py [--size 320] [--repeats 2]

The case: a hard-preset label (2-voxel sheets 4-8 voxels apart) with 4 % of its surface
dropped (tens of thousands of pinholes) as the mask, and as probabilities 0.75 on the surface,
0.2 elsewhere, plus Gaussian noise (sd 0.2): what a small model's output looks like. Each step
runs once to warm up (numba compiles) and then ``repeats`` times; medians. Beside each step,
in the same run, what a user would reach for instead: scipy's isotropic ``gaussian_filter`` of
the same sigma for the in-plane smoothing (which blurs across the sheets, see README) and a
3x3x3 ``binary_closing`` for pinhole plugging (which bridges neighbouring sheets). Loops are
counted per scorer octant before and after, so the figures also say what each step did.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from scipy import ndimage

from vesuvius_data.metrics import betti_counts
from vesuvius_data.repair import (
    fill_cavities,
    hysteresis,
    patch_sheet_holes,
    plug_pinholes,
    remove_dust,
    smooth_along_sheets,
    split_bridges,
)
from vesuvius_data.synthetic import make_volume


def _median_seconds(fn, repeats: int):
    result = fn()  # warm-up (numba compiles on the first call)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    _, label = make_volume((args.size,) * 3, seed=1, preset="hard")
    rng = np.random.default_rng(1)
    surface = label == 1
    mask = surface & (rng.random(surface.shape) > 0.04)
    prob = np.where(surface, 0.75, 0.2) + rng.normal(0, 0.2, surface.shape)
    prob = np.clip(prob, 0, 1).astype(np.float32)

    def loops(m: np.ndarray) -> int:
        return betti_counts(m, m).pred[1]

    steps = {
        "smooth_along_sheets (sigma 2.5)": lambda: smooth_along_sheets(prob, 2.5) > 0.5,
        "baseline: scipy gaussian_filter (sigma 2.5)":
            lambda: ndimage.gaussian_filter(prob, 2.5) > 0.5,
        "hysteresis (0.7 / 0.5)": lambda: hysteresis(prob, 0.7, 0.5),
        "split_bridges (seed 0.9)": lambda: split_bridges(prob, prob > 0.5, 0.9),
        "remove_dust (100, 6-connected)": lambda: remove_dust(mask, 100, 6),
        "plug_pinholes": lambda: plug_pinholes(mask),
        "baseline: scipy binary_closing (3x3x3)":
            lambda: ndimage.binary_closing(mask, np.ones((3, 3, 3), bool)),
        "patch_sheet_holes (64 px)": lambda: patch_sheet_holes(mask, 64),
        "fill_cavities (100)": lambda: fill_cavities(mask, 100),
    }
    report = {"size": args.size, "repeats": args.repeats, "loops_in_mask": loops(mask),
              "loops_in_labels": loops(surface), "loops_in_prob_gt_0.5": loops(prob > 0.5),
              "steps": {}}
    for name, fn in steps.items():
        seconds, out = _median_seconds(fn, args.repeats)
        report["steps"][name] = {"seconds": round(seconds, 2), "loops_after": loops(out),
                                 "wrong_voxels": int((out != surface).sum())}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
