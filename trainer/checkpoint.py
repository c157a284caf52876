"""Checkpoints: written atomically (temp file + rename); a crash never leaves a torn one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vesuvius_data._atomic import atomic_write


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
