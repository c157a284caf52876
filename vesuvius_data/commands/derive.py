"""Derive the loss targets (signed distance, medial skeletons) for every volume of a store.

    vesuvius-derive STORE [--clip 20] [--overwrite]

Resumable: volumes that already have both targets with the same clip are skipped.
"""

from __future__ import annotations

import argparse
import sys
import time

from tqdm.auto import tqdm

from vesuvius_data.cli import user_errors
from vesuvius_data.derived import DERIVED_ROLES, derive_targets
from vesuvius_data.store import VolumeStore


@user_errors
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", help="VolumeStore folder")
    ap.add_argument("--clip", type=float, default=10.0,
                    help="distances are clipped to [-clip, clip] voxels (default 10)")
    ap.add_argument("--overwrite", action="store_true", help="derive again even if present")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    store = VolumeStore.open(args.store, mode="a")
    params = {"clip": args.clip}
    todo = [v for v in store.ids() if args.overwrite or any(
        store.info(v).derived.get(r) != params for r in DERIVED_ROLES)]
    t0 = time.perf_counter()
    for vid in tqdm(todo, desc="derive", unit="vol", disable=args.quiet):
        targets = derive_targets(store.label(vid), store.label_spec, args.clip)
        store.add_derived(vid, targets, params)
    print(f"derived {', '.join(DERIVED_ROLES)} for {len(todo)} volumes in "
          f"{time.perf_counter() - t0:.1f} s; {len(store) - len(todo)} already had them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
