"""Fold ensembles on the quality yardstick's data: do K folds beat one model, and what do they
cost? Prints JSON.

    python benchmarks/bench_ensemble.py [--out bench_quality] [--folds 2] [--config cpu_budget]
        [--test 6] [--memory-only] [--key=value ...]

Uses bench_quality's store (six hard training volumes and its validation volume, 128^3) and
its held-out hard test volumes (seeds 3000-3005); run ``bench_quality.py`` first with the same
``--out`` (its single model is the baseline). For each K in ``--folds``:
1. ``vesuvius-crossval`` with ``num_folds=K`` over all seven volumes -> OUT/cv{K}/ (a model
   folder; cached: a rerun skips finished folds);
2. the held-out volumes predicted by the K-fold ensemble (logits averaged per window, as
   ``vesuvius-predict OUT/cv{K}`` does) and by fold 0 alone;
3. scored with the folder's post-processing (tuned on all out-of-fold volumes together),
   and with post-processing tuned on one out-of-fold volume ("val") only;
beside the single model with ``vesuvius-predict``'s defaults. Any ``--key=value`` goes to the
folds' trainer: ``--epochs=6 --iterations_per_epoch=50`` trains each of 2 folds for a quarter
of the single model's 1,200 iterations (the figure the guides quote: full-length folds cost
2 x the single model's training). Also measured, last, in child processes: peak memory and
seconds of predicting one volume (``--memory-side``) with 1, 2 and 5 models of the config's
size (random weights: the cost does not depend on them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_quality import (  # noqa: E402
    TEST_SEED,
    _data,
    _stored_repair,
    _summary,
    _volumes,
    yardstick_arguments,
)

from trainer.commands.crossval import cross_validate  # noqa: E402
from trainer.config import apply_overrides, load_config  # noqa: E402
from trainer.inference import decode_probabilities, predict_volume  # noqa: E402
from trainer.model_folder import load_models  # noqa: E402
from trainer.postprocessing import choose_postprocessing, read_postprocessing  # noqa: E402
from vesuvius_data import VolumeStore  # noqa: E402
from vesuvius_data.repair.tune import CachedRepair  # noqa: E402

MEMORY_CHILD = r"""
import json, resource, sys, time, numpy as np, torch
from trainer.config import load_config
from trainer.inference import predict_volume
from trainer.model import build_model
cfg, n, side = load_config(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(2)
models = [build_model(cfg.model, cfg.initial_filters, cfg.depth) for _ in range(n)]
volume = np.random.default_rng(0).integers(0, 255, (side,) * 3, dtype=np.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
predict_volume(models if n > 1 else models[0], volume, (cfg.patch_size,) * 3, batch_size=4)
print(json.dumps({"models": n, "seconds": time.perf_counter() - t,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_mib": before / 1024}))
"""


def _memory(config: str, side: int) -> list[dict]:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    out = []
    for n in (1, 2, 5):
        proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, config, str(n), str(side)],
                              capture_output=True, text=True, env=env, check=True)
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def _ensemble_rows(out: Path, k: int, store_path: Path, config: str, overrides: dict,
                   tests: dict, labels: dict) -> tuple[dict, dict]:
    cfg = apply_overrides(load_config(config), {"data_dir": str(store_path),
                                                "out": str(out / f"cv{k}"),
                                                "num_folds": str(k), **overrides})
    t = time.perf_counter()
    assert cross_validate(cfg, Path(cfg.out), list(range(k)),
                          log=lambda line: print(line, file=sys.stderr)) == 0
    seconds = time.perf_counter() - t
    folder = load_models([cfg.out])
    t = time.perf_counter()
    ens = {v: predict_volume(folder.models, im, (folder.patch,) * 3, batch_size=4)
           for v, im in tests.items()}
    per_volume = (time.perf_counter() - t) / len(tests)
    one = {v: predict_volume(folder.models[0], im, (folder.patch,) * 3, batch_size=4)
           for v, im in tests.items()}
    oof = read_postprocessing(Path(cfg.out) / "postprocessing.json")
    val_prob = decode_probabilities(tifffile.imread(Path(cfg.out) / "oof" / "val.tif"))
    store = VolumeStore.open(store_path)
    on_val, _ = choose_postprocessing({"val": val_prob}, {"val": np.asarray(store.label("val"))},
                                      "one out-of-fold volume", progress=False)
    e, o = CachedRepair(ens), CachedRepair(one)
    return {
        f"{k}-fold ensemble + out-of-fold post-processing (vesuvius-predict's defaults)":
            _summary({v: e(v, oof.repair) for v in tests}, labels) | {
                "repair": oof.repair.to_flags()},
        f"{k}-fold ensemble + post-processing tuned on one volume":
            _summary({v: e(v, on_val.repair) for v in tests}, labels) | {
                "repair": on_val.repair.to_flags()},
        f"fold 0 of {k} alone + out-of-fold post-processing":
            _summary({v: o(v, oof.repair) for v in tests}, labels),
    }, {"crossval_s": seconds, "ensemble_predict_s_per_volume": per_volume}


def main(argv: list[str] | None = None) -> int:
    ap = yardstick_arguments(__doc__)
    ap.add_argument("--folds", default="2", help="comma-separated fold counts, e.g. 2,5")
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--memory-side", type=int, default=128,
                    help="side of the volume the memory children predict")
    args, rest = ap.parse_known_args(argv)
    overrides = dict(a[2:].split("=", 1) for a in rest if a.startswith("--") and "=" in a)
    report: dict = {"cost": {}}
    if not args.memory_only:
        store_path = _data(args.out, args.size, args.train)
        hard = _volumes(args.size, TEST_SEED, args.test, "hard")
        tests = {v: im for v, (im, _) in hard.items()}
        labels = {v: lab for v, (_, lab) in hard.items()}
        report["hard"] = {}
        for k in (int(x) for x in args.folds.split(",")):
            rows, report["cost"][f"{k} folds"] = _ensemble_rows(
                args.out, k, store_path, args.config, overrides, tests, labels)
            report["hard"] |= rows
        single = args.out / "run" / "best.pt"  # bench_quality's model (it may train meanwhile)
        if not single.is_file():
            raise SystemExit(f"{single} is missing: run bench_quality.py --out {args.out} first")
        model = load_models([single])
        probs = {v: predict_volume(model.models, im, (model.patch,) * 3, batch_size=4)
                 for v, im in tests.items()}
        cached = CachedRepair(probs)
        stored = _stored_repair(single)
        report["hard"]["single model (6 training volumes), vesuvius-predict's defaults"] = \
            _summary({v: cached(v, stored) for v in tests}, labels) | {
                "repair": stored.to_flags()}
    report["memory"] = _memory(args.config, args.memory_side)  # last: the numbers above first
    print(json.dumps(report, indent=1, default=lambda o: dataclasses.asdict(o)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
