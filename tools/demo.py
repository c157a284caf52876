"""The main job on the embedded synthetic dataset, end to end.

    python tools/demo.py [--out demo] [--volumes 4] [--shape 320] [--seed 0]

Stages (each resumable: rerun it and finished work is skipped):
  1. generate synthetic scroll volumes in the competition layout   -> OUT/competition/
  2. ingest them into a VolumeStore and print the label census       -> OUT/store.zarr
  3. build the patch index (incremental) and print what it says      -> OUT/store.zarr.index_*.npz
  4. compare the sampling strategies on it and time the loader
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/demo.py`: make `tools` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import index, ingest, strategies, synth  # noqa: E402
from vesuvius_data.patch_index import default_index_path  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--out", type=Path, default=Path("demo"), help="working folder")
    parser.add_argument("--volumes", type=int, default=4)
    parser.add_argument("--shape", type=int, default=320, help="side of the cubic volumes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patch-size", type=int, default=128)
    args = parser.parse_args(argv)

    src, store = args.out / "competition", args.out / "store.zarr"
    print(f"== 1. synthetic data -> {src}")
    if (src / "train.csv").is_file():
        print("   already there; delete the folder to regenerate")
    else:
        synth.main([str(src), "--volumes", str(args.volumes), "--shape", str(args.shape),
                    "--seed", str(args.seed)])
    print(f"\n== 2. ingest -> {store}")
    rc = ingest.main([str(src), str(store)])
    if rc:
        return rc
    print(f"\n== 3. patch index (patch {args.patch_size}, stride {args.patch_size // 2})")
    rc = index.main([str(store), "--patch-size", str(args.patch_size),
                     "--report", str(args.out / "index_report.png")])
    if rc:
        return rc
    print("\n== 4. sampling strategies")
    stride = max(args.patch_size // 2, 1)
    return strategies.main([str(default_index_path(store, args.patch_size, stride)),
                            "--store", str(store)])


if __name__ == "__main__":
    sys.exit(main())
