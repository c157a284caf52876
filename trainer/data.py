"""The trainer's data: targets derived and the index built once (rank 0 first), the store's
volumes split into folds, and a loader per fold over that fold's rows only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vesuvius_data import PatchIndex, VolumeStore, build_index, make_loader
from vesuvius_data.derived import DERIVED_ROLES, derive_targets
from vesuvius_data.index import default_index_path, default_stride

from .augment import DeviceIntensity, build_augmentation
from .config import Config
from .distributed import Dist

__all__ = ["prepare_data", "fold_loaders", "volume_rows", "normalize_on"]


def prepare_data(cfg: Config, needs: set[str], d: Dist, log):
    """``_prepare_data`` on rank 0 first (it derives targets and builds the index), then on
    the others, which find both ready."""
    if not d.main:
        d.barrier()
    prepared = _prepare_data(cfg, needs, log)
    if d.main:
        d.barrier()
    return prepared


def _prepare_data(cfg: Config, needs: set[str], log) -> tuple[VolumeStore, PatchIndex, str]:
    """Open the store, derive missing targets, load or build the index (saying so)."""
    store = VolumeStore.open(cfg.data_dir)
    if not store.label_spec.is_binary:
        raise ValueError(f"{cfg.data_dir} has multi-class labels ({store.label_spec.describe()});"
                         " the trainer segments one foreground class. Multi-class stores work "
                         "with the index, strategies and loader (make_loader) in your own "
                         "training loop")
    stride = cfg.stride or default_stride(cfg.patch_size)
    missing = [v for v in store.ids() if not needs <= set(store.info(v).derived)]
    underivable = sorted(needs - set(DERIVED_ROLES))
    for vid in missing:
        if not set(underivable) <= set(store.info(vid).derived):
            raise ValueError(f"volume {vid} has no {underivable} target(s), which the loss "
                             "needs and vesuvius-derive does not make: store them with "
                             "VolumeStore.add_derived")
    if needs and missing:
        log(f"deriving {', '.join(sorted(DERIVED_ROLES))} for {len(missing)} volumes (once; "
            f"see vesuvius-derive)")
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


def volume_rows(index: PatchIndex, ids: list[str]) -> np.ndarray:
    codes = [index.volume_ids.index(v) for v in ids if v in index.volumes]
    return np.flatnonzero(np.isin(index.volume, codes))


def fold_loaders(cfg: Config, store: VolumeStore, index: PatchIndex, train_ids: list[str],
             val_ids: list[str], needs: set[str], d: Dist):
    """Training loader (the configured strategy, augmentation) and validation loader (uniform,
    the same patches every epoch), each over its own fold's rows only."""
    roles = ("image", "label", *sorted(needs))
    train_index = index.subset(volume_rows(index, train_ids))
    on = normalize_on(cfg, d.device)
    loader = make_loader(store, train_index, cfg.sampler, cfg.patch_size, cfg.batch_size,
                         cfg.num_workers, cfg.seed,
                         build_augmentation(cfg.augment, intensity=on == "workers"),
                         samples_per_epoch=cfg.iterations_per_epoch * cfg.batch_size,
                         roles=roles, rank=d.rank, world=d.world, normalize_on=on,
                         device_transform=DeviceIntensity(cfg.augment)
                         if on == "device" and cfg.augment > 0 else None,
                         **cfg.sampler_options)
    val_loader = make_loader(store, index.subset(volume_rows(index, val_ids)), "uniform",
                             cfg.patch_size, cfg.batch_size, cfg.num_workers, cfg.seed + 1,
                             roles=roles, samples_per_epoch=cfg.val_iterations * cfg.batch_size,
                             normalize_on=on)
    return train_index, loader, val_loader


def normalize_on(cfg: Config, device: torch.device) -> str:
    """Where images are normalised: ``auto`` is the GPU when training on CUDA (workers hand
    over uint8 patches, a quarter of the bytes, and the GPU normalises and augments their
    intensities in microseconds), the workers on the CPU (where the model's step is the
    bottleneck and the workers' cores are otherwise idle)."""
    if cfg.normalize_on != "auto":
        return cfg.normalize_on
    return "device" if torch.device(device).type == "cuda" else "workers"
