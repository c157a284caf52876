"""Checkpoints: what they hold (``RunState``, and the matched pair ``checkpoint_state`` /
``restore``) and how they are written: atomically (temp file + rename), so a crash never
leaves a torn one."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vesuvius_data._atomic import atomic_write

from .config import Config
from .health import HealthMonitor


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    with atomic_write(path) as f:
        torch.save(state, f)


#: what every checkpoint the trainer writes holds; loading checks for them
REQUIRED_KEYS = ("model", "config")


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A trainer checkpoint (a .pt file, or a run folder's last.pt), checked to be one."""
    path = Path(path)
    if path.is_dir():
        if not (path / "last.pt").is_file():
            raise FileNotFoundError(f"no checkpoint in {path} (expected {path / 'last.pt'}: "
                                    "a run folder that finished at least one epoch)")
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    expected = "expected a .pt file written by the trainer (last.pt or best.pt of a run folder)"
    try:
        # our own files: they hold numpy arrays (strategy state) and the config dict
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # pickle, zip and EOF errors all mean "not a checkpoint"
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: "
                         f"{str(e)[:200]}); {expected}") from e
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{path}: not a trainer checkpoint (no {', '.join(missing)}); "
                         f"{expected}")
    return state


@dataclass
class RunState:
    """What a checkpoint holds besides the config; ``checkpoint_state`` and ``restore`` are its
    matched pair (a test checks that restoring then saving gives back what was saved)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    ema: torch.optim.swa_utils.AveragedModel | None
    strategy: Any  # the training loader's sampling strategy (hard-negative keeps state)
    monitor: HealthMonitor
    index_path: str
    epoch: int = -1  # the last finished epoch
    iteration: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    world: int = 1  # processes training together (torchrun); resume needs the same number


def checkpoint_state(run: RunState, cfg: Config) -> dict[str, Any]:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "ema": run.ema.state_dict() if run.ema is not None else None,
            "strategy": run.strategy.state_dict(), "rng": rng, "config": asdict(cfg),
            "epoch": run.epoch, "iteration": run.iteration, "best_score": run.best_score,
            "best_epoch": run.best_epoch, "health_losses": list(run.monitor.losses),
            "health_streak": run.monitor.streak, "index": run.index_path, "world": run.world}


def restore(run: RunState, ck: dict[str, Any]) -> None:
    """Everything ``checkpoint_state`` saved, back into ``run`` (the config is the caller's)."""
    run.model.load_state_dict(ck["model"])
    run.optimizer.load_state_dict(ck["optimizer"])
    if run.ema is not None and ck["ema"] is not None:
        run.ema.load_state_dict(ck["ema"])
    run.strategy.load_state_dict(ck["strategy"])
    torch.set_rng_state(ck["rng"]["torch"])
    if "cuda" in ck["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
    run.epoch, run.iteration = ck["epoch"], ck["iteration"]
    run.best_score, run.best_epoch = ck["best_score"], ck["best_epoch"]
    run.monitor.losses, run.monitor.streak = list(ck["health_losses"]), ck["health_streak"]
    run.index_path = ck["index"]
    if ck.get("world", 1) != run.world:
        raise ValueError(f"this run was trained on {ck.get('world', 1)} process(es) and is "
                         f"resumed on {run.world}: each rank's share of the sampling stream "
                         f"depends on it; resume with torchrun --nproc_per_node="
                         f"{ck.get('world', 1)} (or 1 process without torchrun)")
