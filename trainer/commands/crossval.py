"""Cross-validation in one command: every fold, out-of-fold predictions, post-processing tuned
on all of them, and a model folder that vesuvius-predict ensembles.

    vesuvius-crossval --config cpu_budget --data_dir STORE --out MODEL [--folds all|0,2|none]
        [--key=value ...]        (python tools/crossval.py ... in a checkout)

Stages, each resumable (rerun the command and finished work is skipped):
  1. train each fold of ``num_folds`` into MODEL/fold_K/ (a run folder: a killed fold resumes
     from its last checkpoint, a finished one is skipped). ``--folds 0,2`` trains only those,
     so folds can run on other GPUs or nodes at once (each with its own command, same --out
     on a shared disk); the last command to find every fold trained goes on to stage 2, and
     ``--folds none`` does only stages 2-3.
  2. predict each fold's validation volumes with that fold's best.pt (out-of-fold: no volume
     is predicted by a model that saw it) -> MODEL/oof/{id}.tif (float16 probabilities)
  3. choose post-processing on all out-of-fold volumes together (the search of vesuvius-tune;
     ``--postprocess_search=quick`` for 16 of its 70 configs) -> MODEL/postprocessing.json;
     score each fold and all of them with it and with a 0.5 threshold alone ->
     MODEL/crossval.json and MODEL/crossval.md (a table)

Then ``vesuvius-predict MODEL test_images/ out/`` averages the folds' logits per window and
applies MODEL/postprocessing.json.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from vesuvius_data import VolumeStore
from vesuvius_data._atomic import atomic_write
from vesuvius_data.cli import user_errors
from vesuvius_data.metrics import score_volume
from vesuvius_data.repair import repair

from ..checkpoint import load_checkpoint
from ..cli import parse_trainer_argv
from ..config import Config, apply_overrides, check_names, load_config
from ..inference import decode_probabilities, encode_probabilities, predict_volume
from ..model_folder import (
    CROSSVAL_FILE,
    checkpoint_of_run,
    model_of_checkpoint,
    read_crossval,
)
from ..postprocessing import (
    POSTPROCESSING_FILE,
    SEARCHES,
    choose_postprocessing,
    write_postprocessing,
)
from ..train import train

__all__ = ["main", "cross_validate"]


def _folds(text: str, num_folds: int) -> list[int]:
    if text == "all":
        return list(range(num_folds))
    if text == "none":
        return []
    try:
        folds = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--folds takes all, none or fold numbers like 0,2; got {text!r}") \
            from None
    bad = [k for k in folds if not 0 <= k < num_folds]
    if bad:
        raise ValueError(f"--folds {bad} outside 0..{num_folds - 1} (num_folds={num_folds})")
    return folds


def _write_json(path: Path, data: Any) -> None:
    with atomic_write(path) as f:
        f.write((json.dumps(data, indent=1) + "\n").encode())


def _plan(model_dir: Path, cfg: Config) -> None:
    """MODEL/crossval.json names the folds before any is trained, so that a model folder
    missing one is recognised as incomplete; a folder planned with another config is refused
    (its folds would not belong together)."""
    record = model_dir / CROSSVAL_FILE
    plan = {"folds": list(range(cfg.num_folds)), "config": dataclasses.asdict(cfg)}
    if record.is_file():
        old = read_crossval(model_dir)
        if old.get("config") != plan["config"]:
            changed = sorted(k for k in plan["config"] if old.get("config", {}).get(k) !=
                             plan["config"][k])
            raise ValueError(f"{record}: this model folder was planned with another config "
                             f"(differs in {', '.join(changed)}); use a new --out")
        return
    model_dir.mkdir(parents=True, exist_ok=True)
    _write_json(record, plan)


def _train_fold(cfg: Config, k: int, model_dir: Path, log) -> None:
    fold_dir = model_dir / f"fold_{k}"
    fold_cfg = dataclasses.replace(cfg, fold=k, out=str(fold_dir), postprocess_search="off")
    log(f"\n== fold {k}/{cfg.num_folds} -> {fold_dir}")
    if (fold_dir / "last.pt").is_file():
        rc = train(fold_cfg, resume=str(fold_dir), log=log)
    else:  # nothing to keep: a start that died before its first epoch
        rc = train(fold_cfg, overwrite=True, log=log)
    if rc:
        raise SystemExit(rc)


def _out_of_fold(model_dir: Path, cfg: Config, store: VolumeStore, log
                 ) -> dict[int, list[str]]:
    """Each fold's validation volumes predicted by that fold's model, cached as float16 TIFs;
    returns the volume ids per fold."""
    oof = model_dir / "oof"
    oof.mkdir(exist_ok=True)
    per_fold = {}
    for k in range(cfg.num_folds):
        ck_path = checkpoint_of_run(model_dir / f"fold_{k}")
        ck = load_checkpoint(ck_path)
        per_fold[k] = list(ck.get("val_ids") or [])
        if not per_fold[k]:
            raise ValueError(f"{ck_path}: holds no validation volume ids (written by an older "
                             "trainer); retrain this fold")
        todo = [v for v in per_fold[k] if not (oof / f"{v}.tif").is_file()]
        if not todo:
            continue
        model, patch = model_of_checkpoint(ck, ck_path)
        for vid in todo:
            log(f"out-of-fold: {vid} by fold {k}")
            prob = predict_volume(model, np.asarray(store.image(vid)), (patch,) * 3, overlap=0.5,
                                  batch_size=cfg.batch_size)
            tmp = oof / f"{vid}.tif.partial"
            tifffile.imwrite(tmp, encode_probabilities(prob, "float16"), compression="zlib")
            tmp.replace(oof / f"{vid}.tif")
    return per_fold


def _scores(masks: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, float]:
    parts = [score_volume(masks[v], labels[v]) for v in masks]
    return {k: float(np.mean([getattr(p, k) for p in parts]))
            for k in ("score", "topo_score", "surface_dice", "voi_score")}


def _table(rows: list[dict]) -> str:
    lines = ["| fold | volumes | score (post-processed) | topo | sdice | voi | threshold 0.5 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['fold']} | {r['volumes']} | {r['score']:.4f} | "
                     f"{r['topo_score']:.4f} | {r['surface_dice']:.4f} | {r['voi_score']:.4f} "
                     f"| {r['threshold_only']:.4f} |")
    return "\n".join(lines)


def cross_validate(cfg: Config, model_dir: Path, folds: list[int], log=print) -> int:
    """The three stages (see the module docstring); returns an exit status."""
    _plan(model_dir, cfg)
    for k in folds:
        _train_fold(cfg, k, model_dir, log)
    missing = [k for k in range(cfg.num_folds)
               if not any((model_dir / f"fold_{k}" / n).is_file() for n in ("best.pt", "last.pt"))]
    if missing:
        log(f"folds {missing} are not trained yet; run them (--folds "
            f"{','.join(map(str, missing))}, here or elsewhere) and rerun with --folds none")
        return 0
    store = VolumeStore.open(cfg.data_dir)
    log("\n== out-of-fold predictions")
    per_fold = _out_of_fold(model_dir, cfg, store, log)
    ids = [v for k in sorted(per_fold) for v in per_fold[k]]
    probs = {v: decode_probabilities(tifffile.imread(model_dir / "oof" / f"{v}.tif"))
             for v in ids}
    labels = {v: np.asarray(store.label(v)) for v in ids}
    log(f"\n== post-processing on {len(ids)} out-of-fold volumes")
    search = cfg.postprocess_search if cfg.postprocess_search != "off" else None
    if search:
        pp, _ = choose_postprocessing(probs, labels,
                                      f"out-of-fold predictions of {cfg.num_folds} folds",
                                      SEARCHES[search])
        write_postprocessing(model_dir / POSTPROCESSING_FILE, pp)
    else:
        pp = None
        (model_dir / POSTPROCESSING_FILE).unlink(missing_ok=True)
    rows = []
    for k, vids in [(k, per_fold[k]) for k in sorted(per_fold)] + [("all", ids)]:
        masks = {v: repair(probs[v], pp.repair) if pp else probs[v] > 0.5 for v in vids}
        plain = _scores({v: probs[v] > 0.5 for v in vids}, {v: labels[v] for v in vids})
        rows.append({"fold": k, "volumes": len(vids),
                     **_scores(masks, {v: labels[v] for v in vids}),
                     "threshold_only": plain["score"]})
    record = read_crossval(model_dir)
    record |= {"out_of_fold": rows, "val_ids": {str(k): v for k, v in per_fold.items()},
               "postprocessing": pp.to_dict() if pp else None}
    _write_json(model_dir / CROSSVAL_FILE, record)
    table = _table(rows)
    (model_dir / "crossval.md").write_text(
        f"# Cross-validation of {model_dir}\n\nOut-of-fold competition scores, post-processed "
        f"with {pp.repair.to_flags() if pp else 'a 0.5 threshold'} (chosen on all out-of-fold "
        f"volumes together).\n\n{table}\n")
    log(table)
    log(f"model folder {model_dir}: {cfg.num_folds} folds, "
        + (f"post-processing {pp.describe()}" if pp else "no post-processing search")
        + f"; predict with: vesuvius-predict {model_dir} INPUT OUT_DIR")
    return 0


@user_errors
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        print("Any trainer config key may follow (vesuvius-train --help lists them).")
        return 0
    config, resume, overwrite, overrides = parse_trainer_argv(argv)
    folds_arg = overrides.pop("folds", "all")
    if resume or overwrite:
        raise ValueError("vesuvius-crossval resumes by itself (rerun the same command); "
                         "--resume and --overwrite are the trainer's")
    cfg = check_names(apply_overrides(load_config(config), overrides))
    if cfg.val_volumes:
        raise ValueError("val_volumes fixes one validation set; cross-validation needs folds")
    return cross_validate(cfg, Path(cfg.out), _folds(str(folds_arg), cfg.num_folds))


if __name__ == "__main__":
    sys.exit(main())
