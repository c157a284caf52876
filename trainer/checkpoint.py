"""Checkpoints: what they hold (``RunState``, and the matched pair ``checkpoint_state`` /
``restore``) and how they are written: atomically (temp file + rename), so a crash never
leaves a torn one.

A checkpoint is data, never code: it holds tensors and plain types only (numpy arrays of the
sampling state are stored as tensors) and loads with ``torch.load(weights_only=True)``, whose
unpickler refuses every class outside an allow-list. Checkpoints written before this rule hold
numpy arrays; the few numpy classes needed to rebuild an array (not an object array) are
allowed, so they still load. Anything else is refused with one line naming the file, unless
the caller vouches for it (``trust=True``, ``--trust-checkpoint`` on the command line).
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vesuvius_data._atomic import atomic_write

from .config import Config
from .health import HealthMonitor


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    with atomic_write(path) as f:
        torch.save(state, f)


#: what every checkpoint the trainer writes holds; loading checks for them
REQUIRED_KEYS = ("model", "config")


def _numpy_globals() -> list[Any]:
    """The numpy classes an unpickler needs to rebuild numeric arrays and scalars: an array of
    a numeric dtype carries its bytes, nothing that could call code."""
    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    dtypes = getattr(np, "dtypes", None)
    classes = [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")] if dtypes else []
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype, *classes]


def to_plain(obj: Any) -> Any:
    """``obj`` with numpy arrays as tensors and numpy scalars as Python numbers, recursively:
    what a checkpoint may hold."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def _to_numpy(obj: Any) -> Any:
    """The inverse of ``to_plain`` for state that numpy code reads (a strategy's)."""
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: _to_numpy(v) for k, v in obj.items()}
    return obj


def read_checkpoint_file(path: Path, trust: bool = False) -> Any:
    """``torch.load`` of a file that must hold only tensors and plain types (see the module
    docstring); ``trust`` loads anything, for a file the user vouches for."""
    if trust:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(_numpy_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: not the user's
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise
        needs = _globals_named(path)
        if not needs:  # the restricted unpickler failed on something that is no pickle at all
            raise
        raise ValueError(f"{path}: refused: loading it would call {', '.join(needs[:3])}, and "
                         "a checkpoint holds only tensors and plain types; if you trust the "
                         "file pass --trust-checkpoint") from None


def _globals_named(path: Path) -> list[str]:
    """The classes and functions a checkpoint's pickle would look up (outside the allow-list
    for torch's zip layout); [] when the file is no readable pickle."""
    import pickletools
    import zipfile

    if zipfile.is_zipfile(path):
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    names, strings = [], []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # noqa: BLE001 - any parse failure means "not a pickle"
        return []
    return names


def load_checkpoint(path: str | os.PathLike[str], trust: bool = False) -> dict[str, Any]:
    """A trainer checkpoint (a .pt file, or a run folder's last.pt), checked to be one and
    loaded without running code (``trust`` lifts that, see ``read_checkpoint_file``)."""
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
        state = read_checkpoint_file(path, trust)
    except Exception as e:  # pickle, zip and EOF errors all mean "not a checkpoint"
        if isinstance(e, ValueError) and str(path) in str(e):
            raise  # ours, and it names the file already
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: "
                         f"{str(e)[:200]}); {expected}") from e
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{path}: not a trainer checkpoint (no {', '.join(missing)}); "
                         f"{expected}")
    damaged = _damaged_parts(state)
    if damaged:
        raise ValueError(f"{path}: a damaged checkpoint ({damaged}); {expected}")
    return state


def _damaged_parts(state: dict[str, Any]) -> str | None:
    """What a loaded checkpoint gets wrong in the parts every reader trusts, or None."""
    for key in ("model", "ema"):
        weights = state.get(key)
        if key == "ema" and not weights:
            continue
        if not isinstance(weights, dict) or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
            return f"its {key} is not a mapping of names to tensors"
    for key in ("postprocessing", "label_spec"):
        if state.get(key) is not None and not isinstance(state[key], dict):
            return f"its {key} is not a mapping"
    if not isinstance(state["config"], dict):
        return "its config is not a mapping"
    return None  # the config's keys and values: config_from_dict, where the model is built


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
    scaler: torch.amp.GradScaler | None = None  # fp16 loss scaling (a disabled one otherwise)
    label_spec: dict[str, Any] | None = None  # the training store's, so ensembles can check it
    val_ids: list[str] | None = None  # validation volumes (cross-validation predicts them)
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
            "strategy": to_plain(run.strategy.state_dict()), "rng": rng, "config": asdict(cfg),
            "epoch": run.epoch, "iteration": run.iteration, "best_score": run.best_score,
            "best_epoch": run.best_epoch, "health_losses": [float(x) for x in run.monitor.losses],
            "health_streak": run.monitor.streak, "index": run.index_path, "world": run.world,
            "scaler": run.scaler.state_dict() if run.scaler is not None else {},
            "label_spec": to_plain(run.label_spec), "val_ids": list(run.val_ids or [])}


def restore(run: RunState, ck: dict[str, Any]) -> None:
    """Everything ``checkpoint_state`` saved, back into ``run`` (the config is the caller's)."""
    run.model.load_state_dict(ck["model"])
    run.optimizer.load_state_dict(ck["optimizer"])
    if run.ema is not None and ck["ema"] is not None:
        run.ema.load_state_dict(ck["ema"])
    run.strategy.load_state_dict(_to_numpy(ck["strategy"]))
    torch.set_rng_state(ck["rng"]["torch"])
    if "cuda" in ck["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
    run.epoch, run.iteration = ck["epoch"], ck["iteration"]
    run.best_score, run.best_epoch = ck["best_score"], ck["best_epoch"]
    run.monitor.losses, run.monitor.streak = list(ck["health_losses"]), ck["health_streak"]
    run.index_path = ck["index"]
    if run.scaler is not None and ck.get("scaler"):
        run.scaler.load_state_dict(ck["scaler"])
    run.label_spec = ck.get("label_spec", run.label_spec)
    run.val_ids = list(ck.get("val_ids") or run.val_ids or [])
    if ck.get("world", 1) != run.world:
        raise ValueError(f"this run was trained on {ck.get('world', 1)} process(es) and is "
                         f"resumed on {run.world}: each rank's share of the sampling stream "
                         f"depends on it; resume with torchrun --nproc_per_node="
                         f"{ck.get('world', 1)} (or 1 process without torchrun)")
