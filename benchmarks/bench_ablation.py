"""The CPU-budget ablation: which model 2 CPU cores train best in about 15 minutes.

    python benchmarks/bench_ablation.py [--out bench_ablation] [--rows NAME,NAME]
        [--checkpoint CHECKPOINT ...] [--size 128] [--train 6] [--test 6]

Each row trains ``cpu_budget`` with a few keys changed (``ROWS``) on six 128^3 volumes of one
preset (``hard``, or ``random``: every volume its own look) plus one validation volume of the
same preset, then scores the held-out test sets of ``bench_quality.py`` (hard volumes, seeds
3000-3005, and the out-of-family volumes, seeds 5000-5005, whose looks lie outside every
training range) as ``vesuvius-predict RUN`` would: with the post-processing the trainer chose
on its validation volume and stored. Beside it, the model thresholded at the validation
volume's best threshold. ``--checkpoint`` scores other models the same way (e.g. the demo's:
``demo/runs/demo/best.pt``). Every row is cached in ``OUT/NAME/`` (rerun and finished rows
are skipped); the data of each preset is made once and shared.

Prints one JSON document (per row: its overrides, training minutes and iterations/s, and per
test set the mean score, TopoScore, SurfaceDice, VOI and bars predicted/label per dimension)
and writes ``OUT/ablation.md``, the table docs/training.md quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_quality import (  # noqa: E402
    TEST_SEED,
    _data,
    _out_of_family,
    _probabilities,
    _stored_repair,
    _summary,
    _train,
    _volumes,
)

from trainer.checkpoint import load_checkpoint  # noqa: E402
from vesuvius_data import VolumeStore  # noqa: E402
from vesuvius_data.repair.tune import CachedRepair, config_of, search_stages, tune  # noqa: E402

#: name -> the preset trained on and the keys changed from ``cpu_budget``
ROWS: dict[str, tuple[str, dict[str, str]]] = {
    "cpu_budget on hard": ("hard", {}),
    "cpu_budget on random": ("random", {}),
    "random + skeleton recall 0.3": ("random", {"loss_weights.skeleton_recall_weight": "0.3"}),
    "random + resunet": ("random", {"model": "resunet"}),
    "random + 16 filters": ("random", {"initial_filters": "16"}),
}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def _score(checkpoint: Path, val: tuple[np.ndarray, np.ndarray],
           tests: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]) -> dict:
    """Per test set: the model with its stored post-processing, and thresholded at the
    validation volume's best threshold."""
    images = {"val": val[0]} | {v: im for part in tests.values() for v, (im, _) in part.items()}
    t = time.perf_counter()
    probs = _probabilities(checkpoint, images, tta=False)
    predict_s = (time.perf_counter() - t) / len(images)
    unsmoothed = [[u for u in search_stages()[0] if not u["sheet_sigma"]]]
    plain = config_of(tune({"val": probs["val"]}, {"val": val[1]}, unsmoothed)[0])
    stored = _stored_repair(checkpoint)
    repaired = CachedRepair(probs)
    out = {"post-processing": stored.to_flags(), "threshold": plain.threshold,
           "predict_s_per_volume": round(predict_s, 1)}
    for part, vols in tests.items():
        labels = {v: lab for v, (_, lab) in vols.items()}
        out[part] = {"defaults": _summary({v: repaired(v, stored) for v in labels}, labels),
                     "threshold only": _summary({v: repaired(v, plain) for v in labels}, labels)}
    return out


def _training_facts(run: Path) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ck = load_checkpoint(run / "best.pt")
    return {"epochs": len(records), "best_epoch": ck["epoch"],
            "iterations_per_s": round(float(np.median([r["iterations_per_s"]
                                                        for r in records])), 2)}


def _table(report: dict) -> str:
    lines = ["| row | train data | hard: defaults | hard: threshold only | out of family: "
             "defaults | loops (dim-1 bars) pred / label, hard | training | command |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in report.items():
        hard, oof = row["hard"], row["out of family"]
        bars = hard["defaults"]["bars_pred_label"]["dim1"]
        train = (f"{row['train_min']:.1f} min, {row['iterations_per_s']} it/s"
                 if "train_min" in row else "-")
        lines.append(
            f"| {name} | {row.get('data', '-')} | {hard['defaults']['score']:.3f} | "
            f"{hard['threshold only']['score']:.3f} | {oof['defaults']['score']:.3f} | "
            f"{bars[0]} / {bars[1]} | {train} | `{row['command']}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--out", type=Path, default=Path("bench_ablation"))
    ap.add_argument("--rows", default=",".join(ROWS),
                    help=f"comma-separated row names (default all: {', '.join(ROWS)})")
    ap.add_argument("--checkpoint", type=Path, nargs="*", default=[],
                    help="also score these models (no training)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--train", type=int, default=6)
    ap.add_argument("--test", type=int, default=6)
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; valid: {list(ROWS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    tests = {"hard": _volumes(args.size, TEST_SEED, args.test, "hard"),
             "out of family": _out_of_family(args.size, args.test)}

    def val_of(store_path: Path) -> tuple[np.ndarray, np.ndarray]:
        store = VolumeStore.open(store_path)
        return np.asarray(store.image("val")), np.asarray(store.label("val"))

    report: dict[str, dict] = {}
    for name in names:
        preset, overrides = ROWS[name]
        row_dir = args.out / _slug(name)
        result = row_dir / "result.json"
        if result.is_file():
            report[name] = json.loads(result.read_text())
            continue
        store_path = _data(args.out, args.size, args.train, preset)
        run, seconds = _train(row_dir, store_path, "cpu_budget", overrides)
        row = {"data": preset, "overrides": overrides, "train_min": round(seconds / 60, 1),
               **_training_facts(run),
               "command": f"python benchmarks/bench_ablation.py --rows '{name}'",
               **_score(run / "best.pt", val_of(store_path), tests)}
        result.write_text(json.dumps(row, indent=1))
        report[name] = row
        print(f"{name}: hard {row['hard']['defaults']['score']:.3f}, out of family "
              f"{row['out of family']['defaults']['score']:.3f}", file=sys.stderr)
    for checkpoint in args.checkpoint:
        report[str(checkpoint)] = {
            "command": f"python benchmarks/bench_ablation.py --rows '' --checkpoint {checkpoint}",
            **_score(checkpoint, val_of(_data(args.out, args.size, args.train, "hard")), tests)}
    print(json.dumps(report, indent=1))
    (args.out / "ablation.md").write_text(_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
