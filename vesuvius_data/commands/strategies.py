"""Compare the sampling strategies on an index: what each one would feed the model.

    vesuvius-strategies INDEX [--draws 1000] [--seed 0] [--store STORE]

For every registered strategy, draws patches and prints the realized surface share (surface
voxels / labeled voxels over the drawn patches) beside the dataset's. With --store it also
reads a few batches through the loader and prints its speed.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from vesuvius_data import PatchIndex, make_loader
from vesuvius_data.cli import positive_int, user_errors
from vesuvius_data.sampling import STRATEGIES, make_strategy


def compare(index: PatchIndex, draws: int = 1000, seed: int = 0) -> list[dict]:
    """One row per strategy: realized surface share of ``draws`` patches, and more."""
    out = []
    for name in sorted(STRATEGIES):
        rows = make_strategy(name, index).sample(np.random.default_rng(seed), draws)
        out.append({
            "strategy": name,
            "surface_share_of_labeled": float(index.surface[rows].sum()
                                              / max(index.labeled[rows].sum(), 1)),
            "patches_with_surface": float((index.surface[rows] > 0).mean()),
            "distinct_patches": int(len(np.unique(rows))),
        })
    return out


@user_errors
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("index", help="index file from vesuvius-index")
    ap.add_argument("--draws", type=positive_int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", default=None, help="also time the loader on this store")
    args = ap.parse_args(argv)
    index = PatchIndex.load(args.index)
    rows = compare(index, args.draws, args.seed)
    dataset = index.census().foreground_share_of_labeled
    print(f"{args.draws} draws per strategy from {len(index)} patches; dataset surface share "
          f"of labeled voxels: {dataset:.1%}")
    print(f"{'strategy':>15} {'surface/labeled':>16} {'with surface':>13} {'distinct':>9}")
    print(f"{'(dataset)':>15} {dataset:>16.1%}")
    for r in rows:
        print(f"{r['strategy']:>15} {r['surface_share_of_labeled']:>16.1%} "
              f"{r['patches_with_surface']:>13.1%} {r['distinct_patches']:>9}")
    if args.store:
        loader = make_loader(args.store, index, "balanced", batch_size=2, num_workers=2,
                             samples_per_epoch=64)
        t, n = time.perf_counter(), 0
        for batch in loader:
            n += batch["image"].shape[0]
        print(f"loader (balanced, 2 workers): {n} patches of {tuple(batch['image'].shape[1:])} "
              f"in {time.perf_counter() - t:.1f} s incl. worker start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
