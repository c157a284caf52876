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
  7. generate held-out test volumes in the competition layout (other seeds: never trained or
     tuned on)                                                        -> OUT/test/test_images/
  8. predict them with best.pt and the post-processing the run stored with it, as
     vesuvius-predict does with no flags         -> OUT/submission/ and OUT/submission.zip
  9. score the submission against the test labels, beside an empty prediction and an
     intensity threshold tuned on the run's validation labels

Any other --key=value goes to the trainer (e.g. --epochs=3).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from trainer.checkpoint import load_checkpoint
from trainer.cli import main as train_main
from trainer.commands import predict, report
from trainer.config import config_from_dict
from trainer.model_folder import checkpoint_of_run
from trainer.validation import validation_boxes
from vesuvius_data import VolumeStore
from vesuvius_data._atomic import atomic_write
from vesuvius_data.baselines import intensity_threshold, tune_intensity_threshold
from vesuvius_data.cli import nonnegative_int, positive_int, user_errors
from vesuvius_data.commands import evaluate, index, ingest, strategies, synth
from vesuvius_data.index import default_index_path, default_stride
from vesuvius_data.metrics import score_volume
from vesuvius_data.store.handles import pair_ids, volume_handles
from vesuvius_data.synthetic import write_competition_layout

#: test volumes' seeds sit this far from the training seed (never the same volumes)
TEST_SEED_OFFSET = 1000


_STARTED = [0.0]


def _header(text: str, first: bool = False) -> None:
    """A stage's header, with the time since the demo started (where the minutes go)."""
    if first:
        _STARTED[0] = time.perf_counter()
    minutes, seconds = divmod(int(time.perf_counter() - _STARTED[0]), 60)
    print(("" if first else "\n") + f"== {text}   [{minutes}:{seconds:02d}]", flush=True)


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--out", type=Path, default=Path("demo"), help="working folder")
    parser.add_argument("--volumes", type=positive_int, default=4)
    parser.add_argument("--shape", type=positive_int, default=320, help="side of the cubic volumes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="mixed",
                        help="easy, hard, mixed or random (vesuvius-synth)")
    parser.add_argument("--patch-size", type=positive_int, default=128,
                        help="patch side of stages 3-4 (index, strategies); training takes its "
                        "own from its config, or from --patch_size=N passed to the trainer")
    parser.add_argument("--test-volumes", type=nonnegative_int, default=4,
                        help="held-out test volumes of stages 7-9; 0 skips them")
    parser.add_argument("--test-shape", type=positive_int, default=128,
                        help="side of the test volumes (a 320^3 one takes ~2 minutes to "
                        "predict on 2 CPU cores; 128^3 ~8 s)")
    parser.add_argument("--train", default="cpu_smoke",
                        help="trainer config for stage 5: a packaged name or a YAML file; "
                        "'none' skips training")

    args, train_overrides = parser.parse_known_args(argv)  # the rest goes to the trainer
    args.test_shape = min(args.test_shape, args.shape)

    src, store = args.out / "competition", args.out / "store.zarr"
    _header(f"1. synthetic data -> {src}", first=True)
    if (src / "train.csv").is_file():
        print("   already there; delete the folder to regenerate")
    else:
        rc = synth.main([str(src), "--volumes", str(args.volumes), "--shape", str(args.shape),
                         "--seed", str(args.seed), "--preset", args.preset])
        if rc:
            return rc
    _header(f"2. ingest -> {store}")
    rc = ingest.main([str(src), str(store)])
    if rc:
        return rc
    stride = default_stride(args.patch_size)
    _header(f"3. patch index (patch {args.patch_size}, stride {stride})")
    rc = index.main([str(store), "--patch-size", str(args.patch_size),
                     "--report", str(args.out / "index_report.png")])
    if rc:
        return rc
    _header("4. sampling strategies")
    rc = strategies.main([str(default_index_path(store, args.patch_size, stride)),
                          "--store", str(store)])
    if rc or args.train == "none":
        return rc
    run = args.out / "runs" / Path(args.train).stem
    _header(f"5. train ({args.train}) -> {run}")
    if (run / "last.pt").is_file():
        print("   a checkpoint is there: resuming (delete the folder to train afresh)")
        rc = train_main(["--resume", str(run), *train_overrides])
    else:
        rc = train_main(["--config", args.train, f"--data_dir={store}", f"--out={run}",
                         *train_overrides])
    if rc:
        return rc
    _header("6. report")
    rc = report.main([str(run)])
    if rc or not args.test_volumes:
        return rc
    return _submission(args, run)


def _submission(args: argparse.Namespace, run: Path) -> int:
    """Stages 7-9: held-out volumes, a submission predicted with the run's defaults, and its
    score beside the yardsticks."""
    test, sub, packed = args.out / "test", args.out / "submission", args.out / "submission.zip"
    images, labels = test / "test_images", test / "test_labels"
    _header(f"7. held-out test volumes -> {images} (seeds never trained or tuned on)")
    if (test / "test.csv").is_file():
        print("   already there; delete the folder to regenerate")
    else:
        write_competition_layout(test, args.test_volumes, (args.test_shape,) * 3,
                                 seed=args.seed + TEST_SEED_OFFSET, preset=args.preset,
                                 progress=True, split="test")
    best = checkpoint_of_run(run)
    _header(f"8. predict -> {packed} (vesuvius-predict {run} {images} {sub} --zip {packed})")
    if packed.is_file() and packed.stat().st_mtime >= best.stat().st_mtime:
        print("   already there (newer than the model); delete it to predict again")
    else:
        rc = predict.main([str(run), str(images), str(sub), "--zip", str(packed)])
        if rc:
            return rc
    _header(f"9. score -> vesuvius-evaluate {packed} {labels}")
    rc = evaluate.main([str(packed), str(labels), "--workers", "2"])
    if rc:
        return rc
    print(_yardsticks(args.out, best, images, labels))
    _header("done")
    return 0


def _yardsticks(out: Path, best: Path, images: Path, labels: Path) -> str:
    """The submission's mean score beside an empty prediction's and a tuned intensity
    threshold's (tuned once on the run's validation labels, cached in OUT)."""
    ck = load_checkpoint(best)
    cfg = config_from_dict(ck["config"])
    cache = out / "intensity_threshold.json"
    try:  # a cache, so a damaged one is recomputed, not trusted
        tuned = json.loads(cache.read_text())
        tuned = {k: tuned[k] for k in ("sigma", "percentile", "dust")}
    except (OSError, ValueError, TypeError, KeyError):
        # on the regions validation scored (metric_crop): where the run chose its repair
        store = VolumeStore.open(cfg.data_dir)
        boxes = validation_boxes(store, ck["val_ids"], cfg.metric_crop)
        tuned = tune_intensity_threshold(
            {v: np.asarray(store.image(v)[b]) for v, b in boxes.items()},
            {v: np.asarray(store.label(v)[b]) for v, b in boxes.items()})
        with atomic_write(cache) as f:
            f.write(json.dumps(tuned).encode())
    subs, labs = volume_handles(out / "submission.zip"), volume_handles(labels)
    imgs = volume_handles(images)
    rows = {"submission (model + stored post-processing)": [], "intensity threshold (sigma "
            f"{tuned['sigma']}, percentile {tuned['percentile']}, dust {tuned['dust']})": [],
            "empty prediction": []}
    for vid in pair_ids(subs, labs):
        label = labs[vid].read()
        masks = (subs[vid].read(), intensity_threshold(imgs[vid].read(), tuned["sigma"],
                                                       tuned["percentile"], tuned["dust"]),
                 np.zeros(label.shape, np.uint8))
        for name, mask in zip(rows, masks, strict=True):
            rows[name].append(score_volume(mask, label).score)
    width = max(map(len, rows))
    lines = [f"held-out test volumes, mean competition score over {len(rows[next(iter(rows))])}:"]
    lines += [f"  {name:<{width}}  {np.mean(s):.4f}" for name, s in rows.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
