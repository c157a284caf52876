"""What ``vesuvius-predict`` takes as a model, and what it finds there.

- a ``.pt`` checkpoint: that model; its stored post-processing when it holds one (``best.pt``
  of a run validated by the metric does);
- a run folder: its ``best.pt`` (``last.pt`` when there is none) and the folder's
  ``postprocessing.json``;
- a model folder (what ``vesuvius-crossval`` writes: ``fold_K/`` run folders, ``crossval.json``
  and ``postprocessing.json`` tuned on all out-of-fold predictions): every fold's ``best.pt``,
  an ensemble, with the folder's post-processing;
- several of these: one ensemble; post-processing only when they all carry the same.

Members of an ensemble must agree on the patch size and the label convention; a folder that
misses a fold, or a fold that disagrees, is a one-line error naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_checkpoint
from .config import config_from_dict
from .model import build_model
from .postprocessing import POSTPROCESSING_FILE, Postprocessing, read_postprocessing

__all__ = ["CROSSVAL_FILE", "LoadedModels", "model_of_checkpoint", "load_models",
           "fold_dirs", "checkpoint_of_run", "read_crossval"]

CROSSVAL_FILE = "crossval.json"


@dataclass
class LoadedModels:
    models: list[torch.nn.Module]
    patch: int
    postprocessing: Postprocessing | None
    checkpoints: list[Path]
    where: str  # what the post-processing came from, for the log line


def model_of_checkpoint(ck: dict[str, Any], path: str | os.PathLike[str] = "checkpoint"
                        ) -> tuple[torch.nn.Module, int]:
    """The model of a loaded checkpoint (its EMA weights when it kept them), in eval mode, and
    its patch size; a config or weights that do not build one are an error naming ``path``."""
    try:
        cfg = config_from_dict(ck["config"])
        model = build_model(cfg.model, cfg.initial_filters, cfg.depth, cfg.deep_supervision)
        if ck.get("ema"):
            state = {k.removeprefix("module."): v for k, v in ck["ema"].items()
                     if k.startswith("module.")}
        else:
            state = ck["model"]
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError, ValueError) as e:  # torn weights or config
        raise ValueError(f"{path}: its model does not load ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})") from e
    return model.eval(), cfg.patch_size


def checkpoint_of_run(run: Path) -> Path:
    """A run folder's model for prediction: best.pt, else last.pt."""
    for name in ("best.pt", "last.pt"):
        if (run / name).is_file():
            return run / name
    raise FileNotFoundError(f"{run}: no best.pt or last.pt (a run folder that finished at "
                            "least one epoch)")


def fold_dirs(folder: Path) -> list[Path]:
    """The fold run folders of a model folder, in fold order; checked against crossval.json's
    list of folds when there is one."""
    folds = sorted((p for p in folder.glob("fold_*") if p.is_dir()),
                   key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else -1)
    record = folder / CROSSVAL_FILE
    if record.is_file():
        expected = read_crossval(folder)["folds"]
        missing = [f"fold_{k}" for k in expected if not (folder / f"fold_{k}").is_dir()]
        if missing:
            raise FileNotFoundError(f"{record} lists {', '.join(missing)}, missing from "
                                    f"{folder}")
    return folds


def read_crossval(folder: Path) -> dict:
    """A model folder's ``crossval.json``, checked to be a plan (a mapping with a fold list)."""
    record = folder / CROSSVAL_FILE
    try:
        data = json.loads(record.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("folds"), list):
            raise ValueError("no list of folds")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{record}: unreadable ({type(e).__name__}: {e})") from None
    return data


def _members(path: Path) -> tuple[list[Path], Path | None]:
    """Checkpoints of one model argument, and the post-processing file that goes with them."""
    if path.is_file():
        return [path], None
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint or model folder at {path}")
    pp = path / POSTPROCESSING_FILE
    folds = fold_dirs(path)
    if folds:
        return [checkpoint_of_run(f) for f in folds], pp if pp.is_file() else None
    if (path / "best.pt").is_file() or (path / "last.pt").is_file():
        return [checkpoint_of_run(path)], pp if pp.is_file() else None
    raise FileNotFoundError(f"{path}: no checkpoint here (expected a .pt file, a run folder "
                            "that finished at least one epoch: best.pt or last.pt, or a model "
                            "folder of fold_K/ runs)")


def load_models(paths: Sequence[str | os.PathLike[str]], trust: bool = False) -> LoadedModels:
    """Every model that ``paths`` name, checked to fit together, and their post-processing."""
    members, pp_files = [], []
    for p in paths:
        cks, pp = _members(Path(p))
        members += cks
        pp_files.append(pp)
    models, patch, spec, first = [], None, None, None
    stored: list[tuple[Postprocessing | None, str]] = []
    for path in members:
        ck = load_checkpoint(path, trust)
        model, p = model_of_checkpoint(ck, path)
        if patch is not None and p != patch:
            raise ValueError(f"{path}: patch size {p}, but {first} has {patch}; the models of "
                             "an ensemble predict the same windows, so they share one size")
        if spec is not None and ck.get("label_spec") not in (None, spec):
            raise ValueError(f"{path}: label convention {ck['label_spec']}, but {first} has "
                             f"{spec}; an ensemble averages one class")
        patch, spec, first = p, spec or ck.get("label_spec"), first or path
        models.append(model)
        if ck.get("postprocessing"):
            stored.append((Postprocessing.from_dict(ck["postprocessing"],
                                                    f"{path} (its post-processing)"), str(path)))
    pp, where = _postprocessing(paths, pp_files, stored, len(members))
    return LoadedModels(models, patch, pp, members, where)


def _postprocessing(paths, pp_files, stored, n_members) -> tuple[Postprocessing | None, str]:
    """The post-processing that comes with the models: a folder's file, or what a single
    checkpoint holds; several arguments share it only when they agree."""
    chosen = [(read_postprocessing(f), str(f)) for f in pp_files if f is not None]
    if len(paths) == 1 and not chosen and n_members == 1 and stored:
        chosen = stored
    if len(paths) > 1:
        if len(chosen) != len(paths) or len({c.repair for c, _ in chosen}) != 1:
            return None, "the models given do not share one stored post-processing"
    return (chosen[0] if chosen else (None, "no stored post-processing"))
