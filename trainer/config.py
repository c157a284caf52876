"""Training configuration: one dataclass tree, YAML in, ``--key=value`` overrides, YAML out.

Keys are the ones users already write (``learning_rate``, ``warmup_epochs``,
``loss_weights.dice_weight``, ``focal_alpha``, ``use_class_weights`` ...). Unknown keys and
values of the wrong type are errors that list what is valid, and ``check_names`` checks every
name (sampler and its options, model, optimizer, schedule) against its registry before any
data work; the resolved config is saved in the run folder and inside every checkpoint. Each
field's trailing comment is its documentation: ``python -m trainer --help`` prints it.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import os
import tokenize
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .losses import LossWeights

__all__ = ["Config", "load_config", "apply_overrides", "config_to_yaml", "config_from_dict",
           "check_names", "describe_keys"]


@dataclass
class Config:
    # data
    data_dir: str = "demo/store.zarr"  # VolumeStore
    index: str | None = None  # patch index file; built (and said so) when missing
    out: str = "runs/default"  # run folder: config, metrics.jsonl, checkpoints
    patch_size: int = 128  # patch side in voxels (also spelled --patch-size)
    stride: int | None = None  # index grid step; default patch_size // 2
    sampler: str = "balanced"  # any registered strategy
    sampler_options: dict[str, Any] = field(default_factory=dict)  # the strategy's arguments
    fold: int = 0  # which fold validates
    num_folds: int = 5  # group k-fold by scroll_id (by volume when there is one scroll)
    val_volumes: list[str] = field(default_factory=list)  # explicit validation ids (no folds)
    num_workers: int = 2  # loader worker processes; 0 = in the training process
    augment: float = 1.0  # augmentation strength; 0 turns it off
    normalize_on: str = "auto"  # auto | workers | device; auto: device on CUDA (uint8 batches)
    # model
    model: str = "unet"  # unet | resunet
    initial_filters: int = 32  # filters at full resolution, doubling per level (cap 320)
    depth: int = 4  # resolution levels
    deep_supervision: bool = False  # losses on coarser decoder outputs too (1, 1/2, 1/4 ...)
    # optimisation
    optimizer: str = "adamw"  # adamw | sgd (Nesterov)
    learning_rate: float = 1e-3  # peak learning rate, reached after warmup
    weight_decay: float = 1e-4  # decoupled (AdamW) or L2 (SGD)
    schedule: str = "cosine"  # cosine | poly, stepped per iteration after linear warmup
    warmup_epochs: int = 2  # linear warmup; health alarms start after it
    epochs: int = 50  # epochs of iterations_per_epoch steps
    iterations_per_epoch: int = 250  # training steps per epoch
    val_iterations: int = 25  # validation batches per epoch (the same patches every epoch)
    # competition metric on validation volumes (sliding window + score_volume) every N epochs;
    # 0 = off. When on, it is the score that picks best.pt and drives early stopping.
    metric_every: int = 0  # competition score every N epochs (picks best.pt); 0 = off: dice
    metric_crop: int = 0  # 0 = score whole validation volumes; N = a centred N^3 cube of each
    batch_size: int = 2  # patches per step
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    amp: str | bool = "auto"  # auto | bf16 | fp16 | off; auto: bf16 if native, else fp16+scaler
    ema_decay: float = 0.0  # EMA of weights used for validation; 0 = off
    compile: bool = False  # torch.compile the model
    # loss
    loss_weights: LossWeights = field(default_factory=LossWeights)  # weight per term; 0 = off
    focal_gamma: float = 2.0  # focal loss focusing exponent
    focal_alpha: float | str | None = "auto"  # surface-class alpha; auto: balanced once
    use_class_weights: bool | str = "auto"  # auto: inverse frequency from the training census
    background_weight: float = 1.0  # class weights when use_class_weights is true
    foreground_weight: float = 1.0  # (ditto, for the surface class)
    cldice_iterations: int = 3  # soft-skeleton iterations of the clDice term
    boundary_clip: float = 10.0  # signed distances clipped to [-clip, clip] voxels (sdt target)
    # run control
    early_stopping_patience: int = 10  # epochs without a better score before stopping
    # post-processing chosen by the competition metric on best.pt's predictions of the regions
    # validation scores (metric_crop) at the end of a run (needs metric_every): stored in
    # postprocessing.json and best.pt, applied by vesuvius-predict by default. full: the whole
    # search (70 configs); quick: 16 of them; off
    postprocess_search: str = "full"  # full | quick | off
    stop_on_collapse: bool = False  # end with exit status 3 when a health alarm fires
    seed: int = 0  # model init, sampling and augmentation


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


#: the configs that ship with the package (``--config cpu_budget`` names one)
PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"


def config_path(name: str | os.PathLike[str]) -> Path:
    """A config file: a path, or the name of a packaged config (``cpu_smoke``, ``cpu_budget``,
    ``default``; ``configs/NAME.yaml`` as older docs wrote it means the same)."""
    p = Path(name)
    if p.is_file():
        return p
    packaged = PACKAGED_CONFIGS / f"{p.stem}.yaml"
    if p.parent in (Path("."), Path("configs")) and packaged.is_file():
        return packaged
    names = ", ".join(sorted(q.stem for q in PACKAGED_CONFIGS.glob("*.yaml")))
    raise FileNotFoundError(f"no config file at {p} (packaged configs: {names})")


def load_config(path: str | os.PathLike[str] | None) -> Config:
    if path is None:
        return Config()
    p = config_path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not a text file ({e})") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ValueError(f"{p}: not valid YAML{at} ({getattr(e, 'problem', None) or e})") \
            from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a config is a mapping of keys to values")
    try:
        return config_from_dict(data)
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from None


def check_names(cfg: Config) -> Config:
    """Every name in the config against its registry (and the sampler's options against its
    signature), so that a typo fails at load, not after the index is built."""
    from vesuvius_data.sampling import STRATEGIES

    from .model import MODELS
    from .optimizers import OPTIMIZERS
    from .schedule import SCHEDULES

    for key, value, valid in (("sampler", cfg.sampler, STRATEGIES), ("model", cfg.model, MODELS),
                              ("optimizer", cfg.optimizer, OPTIMIZERS),
                              ("schedule", cfg.schedule, SCHEDULES)):
        if value not in valid:
            raise ValueError(f"unknown {key} {value!r}; valid: {', '.join(sorted(valid))}")
    params = inspect.signature(STRATEGIES[cfg.sampler]).parameters
    accepted = [p for p in params if p not in ("self", "index")]
    unknown = sorted(set(cfg.sampler_options) - set(accepted))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise ValueError(f"sampler_options {unknown} are not options of the {cfg.sampler!r} "
                         f"strategy; valid: {', '.join(accepted) or 'none'}")
    if cfg.use_class_weights not in ("auto", True, False):
        raise ValueError(f"use_class_weights must be auto, true or false, got "
                         f"{cfg.use_class_weights!r}")
    from .amp import AMP_MODES

    if cfg.postprocess_search not in ("full", "quick", "off"):
        raise ValueError(f"postprocess_search must be full, quick or off, got "
                         f"{cfg.postprocess_search!r}")
    from vesuvius_data.loader import NORMALIZE_ON

    if cfg.normalize_on not in ("auto", *NORMALIZE_ON):
        raise ValueError(f"normalize_on must be auto, {' or '.join(NORMALIZE_ON)}, got "
                         f"{cfg.normalize_on!r}")
    if cfg.amp not in (*AMP_MODES, True, False):
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {cfg.amp!r}")
    if isinstance(cfg.focal_alpha, str) and cfg.focal_alpha != "auto":
        raise ValueError(f"focal_alpha must be a number, null or auto, got {cfg.focal_alpha!r}")
    return cfg


def _field_docs(cls: type) -> dict[str, str]:
    """Each field's trailing comment in the class source: the one place its meaning is written."""
    docs: dict[str, str] = {}
    tokens = tokenize.generate_tokens(io.StringIO(inspect.getsource(cls)).readline)
    line_name: dict[int, str] = {}
    for tok in tokens:
        if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.start[0] not in line_name:
            line_name[tok.start[0]] = tok.string
        elif tok.type == tokenize.COMMENT and tok.start[0] in line_name:
            docs[line_name[tok.start[0]]] = tok.string.lstrip("# ").strip()
    return docs


def describe_keys() -> str:
    """``--key=default  meaning`` for every config key, sub-keys included (for --help)."""
    lines, docs = [], _field_docs(Config)
    for f in fields(Config):
        value = getattr(Config(), f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"  --{f.name}.*  {docs.get(f.name, '')}")
            for sub in fields(value):
                lines.append(f"    --{f.name}.{sub.name}={getattr(value, sub.name)}")
            continue
        lines.append(f"  --{f.name}={value}" + (f"  {docs[f.name]}" if f.name in docs else ""))
    return "\n".join(lines)


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(asdict(cfg), sort_keys=False)
