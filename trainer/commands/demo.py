"""The main job on the embedded synthetic dataset, end to end.

    vesuvius-demo [--out demo] [--volumes 4] [--shape 320] [--seed 0] [--preset mixed]
        [--key=value ...]

Stages (each resumable: rerun the demo and finished work is skipped; training continues from
its last checkpoint, and a finished run only prints its verdict again):
  1. generate synthetic scroll volumes in the competition layout (easy and hard presets in
     turn, so the model sees thin touching sheets, low contrast and debris too) -> OUT/competition/
  2. ingest them into a VolumeStore and print the label census       -> OUT/store.zarr
  3. build the patch index (incremental) and print what it says      -> OUT/store.zarr.index_*.npz
  4. compare the sampling strategies on it and time the loader
  5. train a tiny 3D U-Net a few short epochs on the CPU (configs/cpu_smoke.yaml): per-epoch
     lines, health alarms, a verdict                                  -> OUT/runs/cpu_smoke/
  6. plot the run                                              -> OUT/runs/cpu_smoke/report.png

Any other --key=value goes to the trainer (e.g. --epochs=3).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.cli import main as train_main
from trainer.commands import report
from vesuvius_data.cli import positive_int, user_errors
from vesuvius_data.commands import index, ingest, strategies, synth
from vesuvius_data.index import default_index_path, default_stride


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--out", type=Path, default=Path("demo"), help="working folder")
    parser.add_argument("--volumes", type=positive_int, default=4)
    parser.add_argument("--shape", type=positive_int, default=320, help="side of the cubic volumes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="mixed", help="easy, hard or mixed (vesuvius-synth)")
    parser.add_argument("--patch-size", type=positive_int, default=128,
                        help="patch side of stages 3-4 (index, strategies); training takes its "
                        "own from its config, or from --patch_size=N passed to the trainer")
    parser.add_argument("--train", default="cpu_smoke",
                        help="trainer config for stage 5: a packaged name or a YAML file; "
                        "'none' skips training")

    args, train_overrides = parser.parse_known_args(argv)  # the rest goes to the trainer

    src, store = args.out / "competition", args.out / "store.zarr"
    print(f"== 1. synthetic data -> {src}")
    if (src / "train.csv").is_file():
        print("   already there; delete the folder to regenerate")
    else:
        rc = synth.main([str(src), "--volumes", str(args.volumes), "--shape", str(args.shape),
                         "--seed", str(args.seed), "--preset", args.preset])
        if rc:
            return rc
    print(f"\n== 2. ingest -> {store}")
    rc = ingest.main([str(src), str(store)])
    if rc:
        return rc
    stride = default_stride(args.patch_size)
    print(f"\n== 3. patch index (patch {args.patch_size}, stride {stride})")
    rc = index.main([str(store), "--patch-size", str(args.patch_size),
                     "--report", str(args.out / "index_report.png")])
    if rc:
        return rc
    print("\n== 4. sampling strategies")
    rc = strategies.main([str(default_index_path(store, args.patch_size, stride)),
                          "--store", str(store)])
    if rc or args.train == "none":
        return rc
    run = args.out / "runs" / Path(args.train).stem
    print(f"\n== 5. train ({args.train}) -> {run}")
    if (run / "last.pt").is_file():
        print("   a checkpoint is there: resuming (delete the folder to train afresh)")
        rc = train_main(["--resume", str(run), *train_overrides])
    else:
        rc = train_main(["--config", args.train, f"--data_dir={store}", f"--out={run}",
                         *train_overrides])
    if rc:
        return rc
    print("\n== 6. report")
    return report.main([str(run)])


if __name__ == "__main__":
    sys.exit(main())
