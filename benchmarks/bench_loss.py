"""Forward + backward time of each loss term at 128^3, batch 2, as a ratio to dice; prints JSON.

    python benchmarks/bench_loss.py [--size 128] [--repeats 5]

Runs on the CPU, and on a CUDA GPU too when one is there (medians of ``repeats``).
Target: the whole compound loss <= 2x dice + focal per step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from trainer.losses import (
    BoundaryLoss,
    ClDiceLoss,
    CompoundLoss,
    ConnectivityLoss,
    DiceLoss,
    FocalLoss,
    LossWeights,
    make_targets,
)
from trainer.losses.skeleton_recall import SkeletonRecallLoss
from vesuvius_data.derived import medial_skeleton, signed_distance
from vesuvius_data.synthetic import make_volume


def _targets(size: int, device: str):
    _, label = make_volume((size,) * 3, seed=0)
    sdt, skel = signed_distance(label), medial_skeleton(label)
    stack = lambda a: torch.from_numpy(np.stack([a, a])[:, None]).to(device)  # noqa: E731
    return make_targets(stack(label), sdt=stack(sdt), skeleton=stack(skel))


def _time(fn, repeats: int, device: str) -> float:
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(device: str, size: int, repeats: int) -> dict:
    targets = _targets(size, device)
    x = torch.randn((2, 1, size, size, size), device=device, requires_grad=True)
    terms = {"dice": DiceLoss(), "focal": FocalLoss(alpha=0.5), "boundary": BoundaryLoss(),
             "cldice": ClDiceLoss(3), "connectivity": ConnectivityLoss(),
             "skeleton_recall": SkeletonRecallLoss(),
             "dice+focal": CompoundLoss(LossWeights(0.3, 0.4, 0, 0, 0)),
             "compound": CompoundLoss(LossWeights())}

    def step(term):
        def run():
            x.grad = None
            out = term(x, targets)
            (out.total if hasattr(out, "total") else out.batch).backward()
        return run

    seconds = {name: _time(step(term), repeats, device) for name, term in terms.items()}
    return {"seconds": seconds,
            "ratio_to_dice": {k: v / seconds["dice"] for k, v in seconds.items()},
            "skeleton_recall_over_cldice": seconds["skeleton_recall"] / seconds["cldice"],
            "compound_over_dice_plus_focal": seconds["compound"] / seconds["dice+focal"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    out = {"size": args.size, "batch": 2, "cpu": bench("cpu", args.size, args.repeats)}
    if torch.cuda.is_available():
        out["cuda"] = bench("cuda", args.size, args.repeats) | {
            "device": torch.cuda.get_device_name()}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
