"""Training throughput: iterations/s and the share of time the step waits for data; prints JSON.

    python benchmarks/bench_train.py [--config configs/default.yaml] [--iterations 4]
        [--epochs 3] [--volumes 4] [--side 192] [--nproc N]

Trains ``--epochs`` short epochs of ``--iterations`` with the config's model, patch size,
batch, workers, loss and AMP, on CUDA when there is one, over ``--volumes`` synthetic volumes
of ``--side``^3 made in a temporary folder (targets derived and index built before timing).
Reports the device by name and, over the epochs after the first (start-up: worker spawn,
cuDNN autotuning, caches), the median iterations/s, samples/s and data-wait fraction (time in
``next(loader)`` over the epoch's time): near 0 means the loader keeps the device busy.
The trainer's own epoch records are the source; nothing here times anything itself.
With ``--nproc N`` the same run is data-parallel under ``torchrun`` (N processes, the config's
batch split between them, so the global batch is unchanged): samples/s are then reported per
rank and in total.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from trainer.cli import main as train_main
from trainer.config import load_config
from trainer.verdict import read_metrics
from vesuvius_data import VolumeStore
from vesuvius_data.synthetic import make_volume


def _device() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} " \
           "threads)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--iterations", type=int, default=4, help="iterations per epoch")
    ap.add_argument("--epochs", type=int, default=3, help="the first is not counted")
    ap.add_argument("--volumes", type=int, default=4)
    ap.add_argument("--side", type=int, default=192)
    ap.add_argument("--nproc", type=int, default=1, help="processes under torchrun")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        store = VolumeStore.create(tmp / "store.zarr")
        for i in range(args.volumes):
            store.add_volume(f"v{i}", *make_volume((args.side,) * 3, seed=i), scroll_id=str(i))
        run = tmp / "run"
        if cfg.batch_size % args.nproc:
            raise SystemExit(f"batch {cfg.batch_size} does not split into {args.nproc} ranks")
        argv_train = ["--config", args.config, f"--data_dir={tmp / 'store.zarr'}",
                      f"--out={run}", f"--epochs={args.epochs}",
                      f"--iterations_per_epoch={args.iterations}", "--val_iterations=1",
                      "--metric_every=0", "--warmup_epochs=1",
                      f"--num_folds={min(cfg.num_folds, args.volumes)}",
                      f"--batch_size={cfg.batch_size // args.nproc}"]
        if args.nproc > 1:
            proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                   f"--nproc_per_node={args.nproc}", "-m", "trainer",
                                   *argv_train], stdout=sys.stderr, check=False)
            code = proc.returncode
        else:
            with contextlib.redirect_stdout(sys.stderr):  # the trainer's log; stdout is JSON
                code = train_main(argv_train)
        if code != 0:
            raise SystemExit(f"training failed with exit status {code}")
        epochs = read_metrics(run)[1:]
        figures = {k: statistics.median(e[k] for e in epochs)
                   for k in ("iterations_per_s", "data_wait_fraction")}
        print(json.dumps({
            "device": _device(),
            "config": args.config,
            "setup": {"patch_size": cfg.patch_size, "batch_size": cfg.batch_size,
                      "model": f"{cfg.model} f{cfg.initial_filters} d{cfg.depth}",
                      "amp": cfg.amp, "num_workers": cfg.num_workers,
                      "volumes": f"{args.volumes} x {args.side}^3",
                      "timed_epochs": len(epochs), "iterations_per_epoch": args.iterations},
            "processes": args.nproc,
            "iterations_per_s": figures["iterations_per_s"],
            "samples_per_s_per_rank": figures["iterations_per_s"] * cfg.batch_size / args.nproc,
            "samples_per_s": figures["iterations_per_s"] * cfg.batch_size,
            "data_wait_fraction": figures["data_wait_fraction"],
        }, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
