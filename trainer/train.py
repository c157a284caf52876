"""The training loop: python -m trainer --config configs/default.yaml --data_dir STORE [...]

Reads top to bottom: config, data (index, derived targets, folds, loaders), loss, model,
optimizer, resume, the epoch loop (train, validate, health, log, checkpoint, early stop),
the verdict. Any config key can be overridden as ``--key=value`` (``--loss_weights.dice_weight
=0.5``); ``--resume RUN_DIR`` continues a run from its last checkpoint, and a fresh run refuses
a folder that holds one unless ``--overwrite`` (which deletes it first): two runs never mix.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vesuvius_data import VolumeStore
from vesuvius_data._atomic import atomic_write

from .amp import resolve_precision
from .checkpoint import RunState, checkpoint_state, load_checkpoint, restore, save_checkpoint
from .config import (
    Config,
    check_names,
    config_to_yaml,
)
from .data import fold_loaders, prepare_data
from .distributed import Dist, init_distributed
from .folds import split_folds
from .health import Confusion, HealthMonitor, batch_report
from .losses import CompoundLoss, Targets, build_loss, make_targets
from .model import build_model, count_parameters
from .optimizers import build_optimizer
from .postprocessing import POSTPROCESSING_FILE, store_run_postprocessing
from .run_folder import claim, keep_metrics_until
from .schedule import learning_rate
from .validation import competition_score, empty_prediction_score, validation_boxes
from .verdict import format_verdict, read_metrics, verdict

COLLAPSE_EXIT = 3


def _batch_targets(batch: dict[str, Any], store: VolumeStore, needs: set[str]) -> Targets:
    """The loss's targets of a batch already on the device (``PatchLoader.to_device``)."""
    return make_targets(batch["label"], store.label_spec, **{k: batch[k] for k in needs})


def _loss(loss_fn: CompoundLoss, outputs, targets: Targets):
    """Compound loss; with deep supervision, weights 1, 1/2, 1/4 ... normalised to sum 1."""
    if isinstance(outputs, torch.Tensor):
        return loss_fn(outputs, targets), outputs
    weights = [0.5**i for i in range(len(outputs))]
    total = sum(weights)
    outs = [loss_fn(o, targets.map(lambda t, f=2**i: t[..., ::f, ::f, ::f]))
            for i, o in enumerate(outputs)]
    combined = sum(w / total * o.total for w, o in zip(weights, outs, strict=True))
    return outs[0]._replace(total=combined), outputs[0]


def _stopped_early(epoch: int, best_epoch: int, cfg: Config) -> bool:
    return epoch - best_epoch >= cfg.early_stopping_patience


def _metric_boxes(cfg: Config, store: VolumeStore, val_ids: list[str], log
                  ) -> tuple[dict[str, tuple], float]:
    """Validation regions the competition metric scores, and what an empty prediction scores
    there: the yardstick the selection score must beat (dice scores it 0)."""
    if not cfg.metric_every:
        return {}, 0.0
    boxes = validation_boxes(store, val_ids, cfg.metric_crop)
    baseline = empty_prediction_score(store, boxes)
    log(f"validation by the competition metric on {len(boxes)} volume(s) ("
        + ("whole" if not cfg.metric_crop else f"centred {cfg.metric_crop}^3 crops")
        + f") every {cfg.metric_every} epochs; an empty prediction scores {baseline:.4f}")
    return boxes, baseline


# ------------------------------------------------------------------ run state and checkpoints
def _build_run(cfg: Config, census, strategy, index_path: str, device: torch.device,
               log, world: int = 1) -> RunState:
    """Model (output bias at the training census's surface prior), optimizer, EMA."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, cfg.initial_filters, cfg.depth, cfg.deep_supervision,
                            census.foreground_share_of_labeled).to(device)
    log(f"model {cfg.model}: {count_parameters(model):,} parameters, initial_filters "
        f"{cfg.initial_filters}, depth {cfg.depth}, output bias at the surface prior "
        f"{census.foreground_share_of_labeled:.3f}")
    opt = build_optimizer(cfg.optimizer, model.parameters(), cfg.learning_rate,
                          cfg.weight_decay)
    ema = (torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay))
        if cfg.ema_decay > 0 else None)
    return RunState(model, opt, ema, strategy, HealthMonitor(cfg.warmup_epochs), index_path,
                    world=world)


# ------------------------------------------------------------------ one epoch
def _train_epoch(run: RunState, step_model, loader, loss_fn: CompoundLoss, store: VolumeStore,
                 cfg: Config, device: torch.device, autocast, epoch: int, d: Dist
                 ) -> dict[str, Any]:
    """One epoch of steps; returns the loss, its terms, the confusion summary and timings (of
    this rank's share: with several ranks, rank 0's)."""
    t0 = time.perf_counter()
    loader.set_epoch(epoch)
    run.model.train()
    total_iters = cfg.epochs * cfg.iterations_per_epoch
    warmup_iters = cfg.warmup_epochs * cfg.iterations_per_epoch
    needs = loss_fn.needs()
    sums = dict.fromkeys(loss_fn.terms, 0.0) | {"total": 0.0}
    conf, n_steps, wait, lr = Confusion(), 0, 0.0, 0.0
    batches = iter(loader)
    bar = tqdm(total=cfg.iterations_per_epoch, desc=f"epoch {epoch}", leave=False,
               disable=None)  # no bar when the output is a log file
    while True:
        tw = time.perf_counter()
        batch = next(batches, None)
        wait += time.perf_counter() - tw
        if batch is None:
            break
        batch = loader.to_device(batch, device)  # normalised there when delivered as uint8
        lr = learning_rate(run.iteration, cfg.learning_rate, warmup_iters, total_iters,
                           cfg.schedule)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        targets = _batch_targets(batch, store, needs)
        with autocast:
            outputs = step_model(batch["image"])
        result, logits = _loss(loss_fn, outputs, targets)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(result.total).backward()  # fp16: scaled, so small gradients survive
        if cfg.grad_clip > 0:
            run.scaler.unscale_(run.optimizer)  # clip the true gradients
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
        run.scaler.step(run.optimizer)  # skipped when an fp16 gradient overflowed
        run.scaler.update()
        if run.ema is not None:
            run.ema.update_parameters(run.model)
        # every rank's feedback reaches every rank's strategy: all sample from one state
        run.strategy.update(*d.gather_feedback(batch["row"].numpy(),
                                               result.per_sample.cpu().numpy()))
        conf.add(logits, targets)
        sums["total"] += result.total.detach().item()
        for k, v in result.terms.items():
            sums[k] += v
        n_steps += 1
        run.iteration += 1
        bar.update()
    bar.close()
    seconds = time.perf_counter() - t0
    n = max(n_steps, 1)
    return {"train_loss": sums.pop("total") / n, "terms": {k: v / n for k, v in sums.items()},
            "train": conf.summary(), "lr": lr, "data_wait_fraction": wait / seconds,
            "iterations_per_s": n_steps / seconds}


def _validate(model, val_loader, loss_fn: CompoundLoss, store: VolumeStore, boxes: dict,
              cfg: Config, device: torch.device, autocast, epoch: int) -> dict[str, Any]:
    """Validation loss and confusion on the same patches every epoch, plus the competition
    score every ``metric_every`` epochs; ``score`` is the one number that picks best.pt."""
    model.eval()
    conf, total, n = Confusion(), 0.0, 0
    val_loader.set_epoch(0)
    with torch.no_grad():
        for batch in val_loader:
            batch = val_loader.to_device(batch, device)
            targets = _batch_targets(batch, store, loss_fn.needs())
            with autocast:
                logits = model(batch["image"])
            total += loss_fn(logits, targets).total.item()
            conf.add(logits, targets)
            n += 1
    stats = conf.summary()
    competition = None
    if cfg.metric_every and (epoch + 1) % cfg.metric_every == 0:
        competition = competition_score(model, store, boxes, cfg, device)
    # the guarded competition score when it is on (only epochs that computed it compete), else
    # validation dice
    score = competition["score"] if competition else (None if cfg.metric_every
                                                      else stats["dice"])
    return {"val_loss": total / max(n, 1), "val": stats, "dice": stats["dice"],
            "competition": competition, "score": score,
            "score_name": "competition" if cfg.metric_every else "dice"}


def _epoch_line(r: dict[str, Any]) -> str:
    t, c = r["train"], r["competition"]
    terms = " ".join(f"{k} {v:.4f}" for k, v in r["terms"].items())
    line = (f"Epoch {r['epoch']} | Train Loss: {r['train_loss']:.4f} | Val Loss: "
            f"{r['val_loss']:.4f} | lr {r['lr']:.1e} | {terms} | pred_fg {t['pred_fg']:.3f} "
            f"label_fg {t['label_fg']:.3f} | fg_recall {t['fg_recall']:.3f} bg_recall "
            f"{t['bg_recall']:.3f} | val_dice {r['dice']:.4f}")
    if c:
        line += (f" | score {c['score']:.4f} (competition: topo {c['topo_score']:.3f} sdice "
                 f"{c['surface_dice']:.3f} voi {c['voi_score']:.3f}"
                 + (f"; {c['degenerate']} volume(s) nearly empty, scored 0"
                    if c["degenerate"] else "") + ")")
    return line


# ------------------------------------------------------------------ the run
def train(cfg: Config, *, resume: str | None = None, overwrite: bool = False,
          stop_after_epochs: int | None = None, log=print) -> int:
    """Run (or resume) training; returns the exit status (0 ok, 3 stopped on collapse).

    A fresh run refuses an ``out`` folder that holds a run unless ``overwrite`` (which deletes
    that run first); nothing is written until the data, model and optimizer are ready, so a
    start that fails leaves no half run folder behind.
    """
    # ------------------------------------------------------------------ setup
    check_names(cfg)
    d = init_distributed()  # one process unless launched by torchrun
    log = log if d.main else _quiet  # rank 0 speaks, writes, validates; the others follow
    out, held = Path(cfg.out), claim(Path(cfg.out), resume, overwrite)
    device = d.device
    precision = resolve_precision(cfg.amp, device)
    autocast = precision.autocast(device)
    log(f"run {out} on {device}" + (f" ({torch.cuda.get_device_name()})" if device.type ==
                                    "cuda" else "") + (f", {d.world} processes" * d.active)
        + f", {precision.name}")

    # ------------------------------------------------------------------ data and loss
    needs = CompoundLoss(cfg.loss_weights).needs()
    store, index, index_path = prepare_data(cfg, needs, d, log)
    train_ids, val_ids = split_folds(store, index.volume_ids, cfg.num_folds, cfg.fold,
                                     cfg.val_volumes)
    log((f"fold {cfg.fold}/{cfg.num_folds}: " if not cfg.val_volumes else "")
        + f"{len(train_ids)} training volumes, "
        f"{len(val_ids)} validation volumes ({', '.join(val_ids)})")
    train_index, loader, val_loader = fold_loaders(cfg, store, index, train_ids, val_ids,
                                                   needs, d)
    census = train_index.census()  # the training fold's only: nothing leaks from validation
    loss_fn = _loss_of(cfg, census, log).to(device)
    boxes, baseline = _metric_boxes(cfg, store, val_ids, log)

    # ------------------------------------------------------------------ model, resume or start
    run = _build_run(cfg, census, loader.strategy, index_path, device, log, d.world)
    run.scaler, run.label_spec = precision.scaler(device), store.label_spec.to_dict()
    run.val_ids = list(val_ids)
    step_model = _step_model(run.model, cfg, d)
    first_epoch = (_resume(run, resume, out, cfg, log, d) if resume else
                   _start(out, held, loader, store, census, cfg, log) if d.main else 0)
    if d.main:
        with atomic_write(out / "config.yaml") as f:
            f.write(config_to_yaml(cfg).encode())

    # ------------------------------------------------------------------ epochs
    exit_code = None
    last_epoch = cfg.epochs - 1 if stop_after_epochs is None else min(
        cfg.epochs, first_epoch + stop_after_epochs) - 1
    for epoch in range(first_epoch, last_epoch + 1):
        t0 = time.perf_counter()
        part = _train_epoch(run, step_model, loader, loss_fn, store, cfg, device, autocast,
                            epoch, d)
        if d.main:
            eval_model = run.ema.module if run.ema is not None else run.model  # EMA when kept
            record = {"epoch": epoch, **part, **_validate(
                eval_model, val_loader, loss_fn, store, boxes, cfg, device, autocast, epoch)}
            record |= {"baseline": baseline, "seconds": time.perf_counter() - t0, "alarms":
                       run.monitor.check(epoch, record["train_loss"], record["train"])}
            exit_code = _end_epoch(run, record, cfg, out, log)
        exit_code = d.broadcast(exit_code)  # every rank stops where rank 0 does
        if exit_code is not None:
            break

    # ------------------------------------------------------------------ post-processing
    finished = (exit_code == 0 or run.epoch + 1 >= cfg.epochs
                or _stopped_early(run.epoch, run.best_epoch, cfg))
    if (d.main and boxes and finished and cfg.postprocess_search != "off"
            and (out / "best.pt").is_file() and not (out / POSTPROCESSING_FILE).is_file()):
        store_run_postprocessing(out, store, boxes, cfg, device, log)

    # ------------------------------------------------------------------ verdict
    if d.main:
        log(format_verdict(verdict(read_metrics(out))))
        log(f"metrics: {out / 'metrics.jsonl'}; plots: vesuvius-report {out}")
    d.close()
    return exit_code or 0


def _loss_of(cfg: Config, census, log) -> CompoundLoss:
    return build_loss(cfg.loss_weights, focal_gamma=cfg.focal_gamma, focal_alpha=cfg.focal_alpha,
                      use_class_weights=cfg.use_class_weights,
                      background_weight=cfg.background_weight,
                      foreground_weight=cfg.foreground_weight, census=census,
                      cldice_iterations=cfg.cldice_iterations, boundary_clip=cfg.boundary_clip,
                      log=log)


def _quiet(_: str) -> None:
    pass


def _step_model(model: torch.nn.Module, cfg: Config, d: Dist) -> torch.nn.Module:
    """What the training step calls: compiled when asked, wrapped in DDP across ranks."""
    step = torch.compile(model) if cfg.compile else model
    if d.active:
        from torch.nn.parallel import DistributedDataParallel

        step = DistributedDataParallel(step, device_ids=[d.device.index]
                                       if d.device.type == "cuda" else None)
    return step


def _end_epoch(run: RunState, record: dict[str, Any], cfg: Config, out: Path, log) -> int | None:
    """Log the epoch, append it to metrics.jsonl, checkpoint (best.pt when the score improved);
    an exit status when the run must stop here (0 early stop, 3 collapse), else None."""
    log(_epoch_line(record))
    for a in record["alarms"]:
        log(f"!!! {a}")
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    epoch = run.epoch = record["epoch"]
    improved = record["score"] is not None and record["score"] > run.best_score
    if improved:
        run.best_score, run.best_epoch = record["score"], epoch
    state = checkpoint_state(run, cfg)
    save_checkpoint(out / "last.pt", state)
    if improved:
        save_checkpoint(out / "best.pt", state)
    if record["alarms"] and cfg.stop_on_collapse:
        log(f"stopping: training collapsed at epoch {epoch} (--stop_on_collapse); see the "
            "alarms above")
        return COLLAPSE_EXIT
    if _stopped_early(epoch, run.best_epoch, cfg):
        log(f"early stop: no better validation score for {cfg.early_stopping_patience} "
            f"epochs (best {run.best_score:.4f} at epoch {run.best_epoch})")
        return 0
    return None


def _resume(run: RunState, resume: str, out: Path, cfg: Config, log, d: Dist) -> int:
    """Restore from ``resume``; the first epoch to train (``cfg.epochs`` when it finished)."""
    ck = load_checkpoint(resume)
    try:
        restore(run, ck)
    except (RuntimeError, TypeError, KeyError, ValueError, AttributeError, IndexError) as e:
        # torn optimizer, strategy or RNG state: a checkpoint this run cannot continue from
        raise ValueError(f"{resume}: cannot resume from it ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})") from e
    if d.main:
        keep_metrics_until(out / "metrics.jsonl", ck["epoch"])
    if _stopped_early(run.epoch, run.best_epoch, cfg) or run.epoch + 1 >= cfg.epochs:
        log(f"{resume}: the run finished at epoch {run.epoch}; nothing left to train")
        return cfg.epochs
    log(f"resumed from {resume} at epoch {run.epoch + 1}")
    return run.epoch + 1


def _start(out: Path, held: list[str], loader, store: VolumeStore, census, cfg: Config,
           log) -> int:
    """A fresh run folder (the old run goes only now, under --overwrite) and the check of the
    first batches; returns the first epoch, 0."""
    if held:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").write_text("")
    first = [b for _, b in zip(range(2), loader, strict=False)]
    text, warnings = batch_report(first, store.label_spec.ignore, store.label_spec.foreground,
                                  census.foreground_share_of_labeled, cfg.sampler)
    log(text)
    for w in warnings:
        log(f"WARNING: {w}")
    return 0

