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


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    # our own files: they hold numpy arrays (strategy state) and the config dict
    return torch.load(path, map_location="cpu", weights_only=False)
