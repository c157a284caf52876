"""Write synthetic scroll-like volumes in the competition layout (the embedded default dataset).

    vesuvius-synth OUT [--volumes 4] [--shape 320] [--seed 0] [--preset easy|hard|mixed|random]
        [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vesuvius_data.cli import positive_int, user_errors
from vesuvius_data.synthetic import PRESET_CYCLES, PRESETS, write_competition_layout


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write train.csv, train_images/, ...")
    parser.add_argument("--volumes", type=positive_int, default=4)
    parser.add_argument("--shape", type=positive_int, nargs="+", default=[320],
                        help="one side (cube) or three sides z y x")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", choices=sorted(PRESETS) + sorted(PRESET_CYCLES) + ["random"],
                        default="easy",
                        help="easy: thick, well separated sheets; hard: thin touching sheets, "
                        "low contrast, bias field, debris; mixed: easy and hard in turn; "
                        "random: each volume's look drawn from documented ranges "
                        "(see vesuvius_data/presets.py)")
    parser.add_argument("--workers", type=positive_int, default=min(2, os.cpu_count() or 1),
                        help="volumes made at once, one process each (same volumes either way)")
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 3):
        parser.error("--shape takes one or three ints")
    shape = tuple(args.shape * 3 if len(args.shape) == 1 else args.shape)
    if min(shape) < 8 or args.volumes < 1:
        parser.error(f"need --volumes >= 1 and every side >= 8, got {args.volumes} and {shape}")
    ids = write_competition_layout(args.out, args.volumes, shape, args.seed,
                                   preset=args.preset, progress=True, workers=args.workers)
    print(f"wrote {len(ids)} {args.preset} volumes of shape {shape} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
