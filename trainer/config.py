"""Training configuration: one dataclass tree, YAML in, ``--key=value`` overrides, YAML out.

Keys are the ones users already write (``learning_rate``, ``warmup_epochs``,
``loss_weights.dice_weight``, ``focal_alpha``, ``use_class_weights`` ...). Unknown keys and
values of the wrong type are errors that list what is valid; the resolved config is saved in
the run folder and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .losses import LossWeights

__all__ = ["Config", "load_config", "apply_overrides", "config_to_yaml", "config_from_dict"]


@dataclass
class Config:
    # data
    data_dir: str = "demo/store.zarr"  # VolumeStore
    index: str | None = None  # patch index file; built (and said so) when missing
    out: str = "runs/default"  # run folder: config, metrics.jsonl, checkpoints
    patch_size: int = 128
    stride: int | None = None  # index grid step; default patch_size // 2
    sampler: str = "balanced"  # any registered strategy
    sampler_options: dict[str, Any] = field(default_factory=dict)
    fold: int = 0
    num_folds: int = 5  # group k-fold by scroll_id (by volume when there is one scroll)
    val_volumes: list[str] = field(default_factory=list)  # explicit validation ids (no folds)
    num_workers: int = 2
    augment: float = 1.0  # augmentation strength; 0 turns it off
    # model
    model: str = "unet"  # unet | resunet
    initial_filters: int = 32
    depth: int = 4
    deep_supervision: bool = False
    # optimisation
    optimizer: str = "adamw"  # adamw | sgd (Nesterov)
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | poly, stepped per iteration after linear warmup
    warmup_epochs: int = 2
    epochs: int = 50
    iterations_per_epoch: int = 250
    val_iterations: int = 25
    # competition metric on validation volumes (sliding window + score_volume) every N epochs;
    # 0 = off. When on, it is the score that picks best.pt and drives early stopping.
    metric_every: int = 0
    metric_crop: int = 0  # 0 = score whole validation volumes; N = a centred N^3 cube of each
    batch_size: int = 2
    grad_clip: float = 1.0
    amp: bool = True  # bf16 autocast on CUDA; CPU always runs fp32
    ema_decay: float = 0.0  # EMA of weights used for validation; 0 = off
    compile: bool = False
    # loss
    loss_weights: LossWeights = field(default_factory=LossWeights)
    focal_gamma: float = 2.0
    focal_alpha: float | str | None = "auto"
    use_class_weights: bool | str = "auto"
    background_weight: float = 1.0
    foreground_weight: float = 1.0
    cldice_iterations: int = 3
    boundary_clip: float = 10.0
    # run control
    early_stopping_patience: int = 10
    stop_on_collapse: bool = False
    seed: int = 0


def _fields_of(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in fields(cls)}


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _set(obj: Any, dotted: str, value: Any, prefix: str = "") -> None:
    head, _, rest = dotted.partition(".")
    known = _fields_of(type(obj))
    if head not in known:
        raise ValueError(f"unknown config key {prefix + dotted!r}; valid keys: "
                         f"{', '.join(prefix + k for k in known)}")
    hints = typing.get_type_hints(type(obj))
    current = getattr(obj, head)
    if dataclasses.is_dataclass(current):
        if rest:
            _set(current, rest, value, f"{prefix}{head}.")
            return
        if not isinstance(value, dict):
            raise ValueError(f"{head} takes a mapping of {', '.join(_fields_of(type(current)))}")
        for k, v in value.items():
            _set(current, k, v, f"{prefix}{head}.")
        return
    if rest:
        raise ValueError(f"config key {head!r} has no sub-keys (got {dotted!r})")
    tp = hints[head]
    if isinstance(value, str) and not _type_ok(value, tp):
        try:  # YAML 1.1 reads "3e-4" (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, int) and not isinstance(value, bool) and _type_ok(1.0, tp) and \
            not _type_ok(1, tp):
        value = float(value)
    if not _type_ok(value, tp):
        raise ValueError(f"config key {dotted!r} wants {tp}, got {value!r}")
    setattr(obj, head, value)


def config_from_dict(d: dict[str, Any], base: Config | None = None) -> Config:
    cfg = base or Config()
    for k, v in d.items():
        _set(cfg, k, v)
    return cfg


def apply_overrides(cfg: Config, overrides: dict[str, str]) -> Config:
    """``{"loss_weights.dice_weight": "0.5"}``: values parse as YAML scalars."""
    for k, raw in overrides.items():
        _set(cfg, k, yaml.safe_load(raw) if isinstance(raw, str) else raw)
    return cfg


def load_config(path: str | os.PathLike[str] | None) -> Config:
    if path is None:
        return Config()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no config file at {p}")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a config is a mapping of keys to values")
    return config_from_dict(data)


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(asdict(cfg), sort_keys=False)
