"""The training loop: python -m trainer --config configs/default.yaml --data_dir STORE [...]

Reads top to bottom: config, data (index, derived targets, folds, loaders), loss, model,
optimizer, resume, the epoch loop (train, validate, health, log, checkpoint, early stop),
the verdict. Any config key can be overridden as ``--key=value`` (``--loss_weights.dice_weight
=0.5``); ``--resume RUN_DIR`` continues a run from its last checkpoint, and a fresh run refuses
a folder that holds one unless ``--overwrite`` (which deletes it first): two runs never mix.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vesuvius_data import PatchIndex, VolumeStore, build_index, make_loader
from vesuvius_data._atomic import atomic_write
from vesuvius_data.cli import user_errors
from vesuvius_data.derived import DERIVED_ROLES, derive_targets
from vesuvius_data.patch_index import default_index_path

from .augment import build_augmentation
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, apply_overrides, config_from_dict, config_to_yaml, load_config
from .folds import split_folds
from .health import Confusion, HealthMonitor, batch_report
from .losses import TERM_NAMES, CompoundLoss, Targets, build_loss, make_targets
from .model import build_model, count_parameters
from .schedule import learning_rate
from .validation import competition_score, empty_prediction_score, validation_boxes
from .verdict import format_verdict, read_metrics, verdict

COLLAPSE_EXIT = 3
#: files whose presence means a folder holds a trained run (config and metrics alone do not:
#: a start killed before its first checkpoint lost nothing, and a fresh start may reuse it)
RUN_MARKERS = ("last.pt", "best.pt")


def _prepare_data(cfg: Config, needs: set[str], log) -> tuple[VolumeStore, PatchIndex, str]:
    """Open the store, derive missing targets, load or build the index (saying so)."""
    store = VolumeStore.open(cfg.data_dir)
    stride = cfg.stride or cfg.patch_size // 2
    missing = [v for v in store.ids() if not needs <= set(store.info(v).derived)]
    if needs and missing:
        log(f"deriving {', '.join(sorted(DERIVED_ROLES))} for {len(missing)} volumes (once; "
            f"see tools/derive.py)")
        store = VolumeStore.open(cfg.data_dir, mode="a")
        for vid in tqdm(missing, desc="derive", unit="vol", disable=None):
            store.add_derived(vid, derive_targets(store.label(vid), store.label_spec,
                                                  cfg.boundary_clip),
                              {"clip": cfg.boundary_clip})
        store = VolumeStore.open(cfg.data_dir)
    index_path = Path(cfg.index) if cfg.index else default_index_path(cfg.data_dir,
                                                                       cfg.patch_size, stride)
    previous = PatchIndex.load(index_path) if index_path.is_file() else None
    # the index's own incremental build decides what is stale: unchanged volumes are copied
    # without a read, so this costs nothing when the index is current
    index = build_index(store, cfg.patch_size, stride, previous=previous, progress=False)
    b = index.meta["build"]
    if previous is None or b["built"] or b["dropped"]:
        log(f"built the patch index {index_path} (patch {cfg.patch_size}, stride {stride}; "
            f"{len(b['built'])} volumes indexed, {len(b['reused'])} reused)")
        index.save(index_path)
    return store, index, str(index_path)


def _volume_rows(index: PatchIndex, ids: list[str]) -> np.ndarray:
    codes = [index.volume_ids.index(v) for v in ids if v in index.volumes]
    return np.flatnonzero(np.isin(index.volume, codes))


def _batch_targets(batch: dict[str, Any], store: VolumeStore, device: torch.device) -> Targets:
    get = lambda k: batch[k].to(device, non_blocking=True) if k in batch else None  # noqa: E731
    return make_targets(get("label"), store.label_spec, get("sdt"), get("skeleton"))


def _downsampled(t: Targets, factor: int) -> Targets:
    s = (slice(None), slice(None)) + (slice(None, None, factor),) * 3
    return Targets(*(None if x is None else x[s] for x in (t.valid, t.fg, t.sdt, t.skeleton)))


def _loss(loss_fn, outputs, targets: Targets):
    """Compound loss; with deep supervision, weights 1, 1/2, 1/4 ... normalised to sum 1."""
    if isinstance(outputs, torch.Tensor):
        return loss_fn(outputs, targets), outputs
    weights = [0.5**i for i in range(len(outputs))]
    total = sum(weights)
    outs = [loss_fn(o, _downsampled(targets, 2**i)) for i, o in enumerate(outputs)]
    first = outs[0]
    combined = sum(w / total * o.total for w, o in zip(weights, outs, strict=True))
    return first._replace(total=combined), outputs[0]


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _held_run(out: Path) -> list[str]:
    """The files that make ``out`` hold a run that a fresh start would destroy."""
    return [name for name in RUN_MARKERS if (out / name).exists()]


def _stopped_early(epoch: int, best_epoch: int, cfg: Config) -> bool:
    return epoch - best_epoch >= cfg.early_stopping_patience


def _keep_metrics_until(path: Path, last_epoch: int) -> None:
    """Drop records after the checkpoint's epoch (and a line torn by a kill), atomically, so a
    resumed run's log never holds an epoch twice."""
    kept = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("epoch", math.inf) <= last_epoch:
            kept.append(line + "\n")
    with atomic_write(path) as f:
        f.write("".join(kept).encode())


def train(cfg: Config, *, resume: str | None = None, overwrite: bool = False,
          stop_after_epochs: int | None = None, log=print) -> int:
    """Run (or resume) training; returns the exit status (0 ok, 3 stopped on collapse).

    A fresh run refuses an ``out`` folder that holds a run unless ``overwrite`` (which deletes
    that run first); nothing is written until the data, model and optimizer are ready, so a
    start that fails leaves no half run folder behind.
    """
    # ------------------------------------------------------------------ setup
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                and cfg.amp else nullcontext())
    out = Path(cfg.out)
    held = _held_run(out) if resume is None else []
    if held and not overwrite:
        raise FileExistsError(f"{out} holds a run ({', '.join(held)}); continue it with "
                              f"--resume {out}, or start afresh with --overwrite (deletes it)")
    log(f"run {out} on {device}" + (f" ({torch.cuda.get_device_name()})"
                                    if device.type == "cuda" else ""))

    # ------------------------------------------------------------------ loss and data
    needs = CompoundLoss(cfg.loss_weights).needs()
    store, index, index_path = _prepare_data(cfg, needs, log)
    train_ids, val_ids = split_folds(store, index.volume_ids, cfg.num_folds, cfg.fold,
                                     cfg.val_volumes)
    log((f"fold {cfg.fold}/{cfg.num_folds}: " if not cfg.val_volumes else "")
        + f"{len(train_ids)} training volumes, "
        f"{len(val_ids)} validation volumes ({', '.join(val_ids)})")
    train_index = index.subset(_volume_rows(index, train_ids))
    val_index = index.subset(_volume_rows(index, val_ids))
    loss_fn = build_loss(cfg.loss_weights, focal_gamma=cfg.focal_gamma,
                         focal_alpha=cfg.focal_alpha, use_class_weights=cfg.use_class_weights,
                         background_weight=cfg.background_weight,
                         foreground_weight=cfg.foreground_weight, index=index,
                         cldice_iterations=cfg.cldice_iterations,
                         boundary_clip=cfg.boundary_clip, log=log).to(device)
    loader = make_loader(store, train_index, cfg.sampler, cfg.patch_size, cfg.batch_size,
                         cfg.num_workers, cfg.seed, build_augmentation(cfg.augment),
                         samples_per_epoch=cfg.iterations_per_epoch * cfg.batch_size,
                         **cfg.sampler_options)
    val_loader = make_loader(store, val_index, "uniform", cfg.patch_size, cfg.batch_size,
                             cfg.num_workers, cfg.seed + 1,
                             samples_per_epoch=cfg.val_iterations * cfg.batch_size)
    census = index.census()
    boxes = validation_boxes(store, val_ids, cfg.metric_crop) if cfg.metric_every else {}
    # the yardstick the selection score must beat: an empty prediction (dice scores it 0)
    baseline = empty_prediction_score(store, boxes) if boxes else 0.0
    if boxes:
        log(f"validation by the competition metric on {len(boxes)} volume(s) ("
            + ("whole" if not cfg.metric_crop else f"centred {cfg.metric_crop}^3 crops")
            + f") every {cfg.metric_every} epochs; an empty prediction scores {baseline:.4f}")

    # ------------------------------------------------------------------ model, optimizer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, cfg.initial_filters, cfg.depth, cfg.deep_supervision,
                            census.foreground_share_of_labeled).to(device)
    log(f"model {cfg.model}: {count_parameters(model):,} parameters, initial_filters "
        f"{cfg.initial_filters}, depth {cfg.depth}, output bias at the surface prior "
        f"{census.foreground_share_of_labeled:.3f}")
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate,
                                weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=0.99,
                              nesterov=True, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: adamw, sgd")
    ema = (torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay))
        if cfg.ema_decay > 0 else None)
    step_model = torch.compile(model) if cfg.compile else model
    total_iters = cfg.epochs * cfg.iterations_per_epoch
    warmup_iters = cfg.warmup_epochs * cfg.iterations_per_epoch
    monitor = HealthMonitor(cfg.warmup_epochs)
    start_epoch, best_score, best_epoch, it = 0, -math.inf, -1, 0

    # ------------------------------------------------------------------ resume
    if resume:
        ck = load_checkpoint(resume)
        _keep_metrics_until(out / "metrics.jsonl", ck["epoch"])
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if ema is not None and ck.get("ema") is not None:
            ema.load_state_dict(ck["ema"])
        loader.strategy.load_state_dict(ck["strategy"])
        torch.set_rng_state(ck["rng"]["torch"])
        if "cuda" in ck["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
        start_epoch, it = ck["epoch"] + 1, ck["iteration"]
        best_score, best_epoch = ck["best_score"], ck["best_epoch"]
        monitor.losses, monitor.streak = list(ck["health_losses"]), ck["health_streak"]
        if _stopped_early(ck["epoch"], best_epoch, cfg) or start_epoch >= cfg.epochs:
            start_epoch = cfg.epochs  # the run had finished: nothing to train, say so below
            log(f"{resume}: the run finished at epoch {ck['epoch']}; nothing left to train")
        else:
            log(f"resumed from {resume} at epoch {start_epoch}")
    else:
        if held:  # --overwrite: the old run goes only now that the new one is ready to write
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text("")
        first = [b for _, b in zip(range(2), loader, strict=False)]
        text, warnings = batch_report(first, store.label_spec.ignore,
                                      store.label_spec.foreground,
                                      census.foreground_share_of_labeled, cfg.sampler)
        log(text)
        for w in warnings:
            log(f"WARNING: {w}")

    with atomic_write(out / "config.yaml") as f:
        f.write(config_to_yaml(cfg).encode())

    # ------------------------------------------------------------------ epochs
    exit_code = 0
    last_epoch = cfg.epochs - 1 if stop_after_epochs is None else min(
        cfg.epochs, start_epoch + stop_after_epochs) - 1
    for epoch in range(start_epoch, last_epoch + 1):
        t0 = time.perf_counter()
        loader.set_epoch(epoch)
        model.train()
        sums = dict.fromkeys(TERM_NAMES, 0.0) | {"total": 0.0}
        conf, n_steps, wait = Confusion(), 0, 0.0
        batches = iter(loader)
        bar = tqdm(total=cfg.iterations_per_epoch, desc=f"epoch {epoch}", leave=False,
                   disable=None)  # no bar when the output is a log file
        while True:
            tw = time.perf_counter()
            batch = next(batches, None)
            wait += time.perf_counter() - tw
            if batch is None:
                break
            lr = learning_rate(it, cfg.learning_rate, warmup_iters, total_iters, cfg.schedule)
            for group in opt.param_groups:
                group["lr"] = lr
            x = batch["image"].to(device, non_blocking=True)
            targets = _batch_targets(batch, store, device)
            with autocast:
                outputs = step_model(x)
            result, logits = _loss(loss_fn, outputs, targets)
            opt.zero_grad(set_to_none=True)
            result.total.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            loader.strategy.update(batch["row"].numpy(), result.per_sample.cpu().numpy())
            conf.add(logits, targets)
            sums["total"] += result.total.detach().item()
            for k, v in result.terms.items():
                sums[k] += v
            n_steps += 1
            it += 1
            bar.update()
        bar.close()
        train_time = time.perf_counter() - t0
        train_loss = sums["total"] / max(n_steps, 1)
        train_stats = conf.summary()

        # validation: the same patches every epoch, EMA weights when kept
        eval_model = ema.module if ema is not None else model
        eval_model.eval()
        val_conf, val_sum, val_n = Confusion(), 0.0, 0
        val_loader.set_epoch(0)
        with torch.no_grad():
            for batch in val_loader:
                targets = _batch_targets(batch, store, device)
                with autocast:
                    logits = eval_model(batch["image"].to(device))
                val_sum += loss_fn(logits, targets).total.item()
                val_conf.add(logits, targets)
                val_n += 1
        val_loss, val_stats = val_sum / max(val_n, 1), val_conf.summary()
        competition = None
        if cfg.metric_every and (epoch + 1) % cfg.metric_every == 0:
            competition = competition_score(eval_model, store, boxes, cfg, device)
        dice = val_stats["dice"]
        # one score picks best.pt, drives early stopping, heads the epoch line and the verdict:
        # the guarded competition score when it is on (only epochs that computed it compete),
        # else validation dice
        score = competition["score"] if competition else (None if cfg.metric_every else dice)

        alarms = monitor.check(epoch, train_loss, train_stats)
        terms = " ".join(f"{k} {sums[k] / max(n_steps, 1):.4f}" for k in TERM_NAMES
                         if k in loss_fn.terms)
        log(f"Epoch {epoch} | Train Loss: {train_loss:.4f} | Val Loss: {val_loss:.4f} | "
            f"lr {lr:.1e} | {terms} | pred_fg {train_stats['pred_fg']:.3f} label_fg "
            f"{train_stats['label_fg']:.3f} | fg_recall {train_stats['fg_recall']:.3f} "
            f"bg_recall {train_stats['bg_recall']:.3f} | val_dice {dice:.4f}"
            + (f" | score {competition['score']:.4f} (competition: topo "
               f"{competition['topo_score']:.3f} sdice {competition['surface_dice']:.3f} "
               f"voi {competition['voi_score']:.3f}"
               + (f"; {competition['degenerate']} volume(s) nearly empty, scored 0"
                  if competition["degenerate"] else "") + ")"
               if competition else ""))
        for a in alarms:
            log(f"!!! {a}")
        record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": lr,
                  "terms": {k: sums[k] / max(n_steps, 1) for k in loss_fn.terms},
                  "train": train_stats, "val": val_stats, "dice": dice, "score": score,
                  "score_name": "competition" if cfg.metric_every else "dice",
                  "baseline": baseline, "alarms": alarms, "competition": competition,
                  "seconds": time.perf_counter() - t0, "data_wait_fraction": wait / train_time,
                  "iterations_per_s": n_steps / train_time}
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

        improved = score is not None and score > best_score
        if improved:
            best_score, best_epoch = score, epoch
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                 "ema": ema.state_dict() if ema is not None else None,
                 "strategy": loader.strategy.state_dict(), "rng": _rng_state(),
                 "config": asdict(cfg), "epoch": epoch, "iteration": it,
                 "best_score": best_score, "best_epoch": best_epoch,
                 "health_losses": monitor.losses, "health_streak": monitor.streak,
                 "index": index_path}
        save_checkpoint(out / "last.pt", state)
        if improved:
            save_checkpoint(out / "best.pt", state)
        if alarms and cfg.stop_on_collapse:
            log(f"stopping: training collapsed at epoch {epoch} (--stop_on_collapse); see the "
                "alarms above")
            exit_code = COLLAPSE_EXIT
            break
        if _stopped_early(epoch, best_epoch, cfg):
            log(f"early stop: no better validation score for {cfg.early_stopping_patience} "
                f"epochs (best {best_score:.4f} at epoch {best_epoch})")
            break

    # ------------------------------------------------------------------ verdict
    log(format_verdict(verdict(read_metrics(out))))
    log(f"metrics: {out / 'metrics.jsonl'}; plots: python tools/report.py {out}")
    return exit_code


def _parse_argv(argv: list[str]) -> tuple[str | None, str | None, bool, dict[str, str]]:
    """``--config PATH``, ``--resume DIR``, ``--overwrite`` and ``--key=value`` / ``--key value``
    overrides."""
    config, resume, overwrite, overrides = None, None, False, {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--overwrite":
            overwrite, i = True, i + 1
            continue
        if arg in ("-h", "--help"):
            print(__doc__)
            print("config keys (default):")
            for k, v in asdict(Config()).items():
                print(f"  --{k}={v}")
            raise SystemExit(0)
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument {arg!r}; use --key=value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv):
                raise ValueError(f"--{key} needs a value")
            value, i = argv[i + 1], i + 1
        if key == "config":
            config = value
        elif key == "resume":
            resume = value
        else:
            overrides[key] = value
        i += 1
    return config, resume, overwrite, overrides


@user_errors
def main(argv: list[str] | None = None) -> int:
    config, resume, overwrite, overrides = _parse_argv(sys.argv[1:] if argv is None else argv)
    if resume and overwrite:
        raise ValueError("--resume continues a run and --overwrite deletes it: pass one")
    if resume:
        cfg = config_from_dict(load_checkpoint(resume)["config"])
        cfg.out = str(Path(resume) if Path(resume).is_dir() else Path(resume).parent)
    else:
        cfg = load_config(config)
    cfg = apply_overrides(cfg, overrides)
    return train(cfg, resume=resume, overwrite=overwrite)


if __name__ == "__main__":
    sys.exit(main())
