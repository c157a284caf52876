"""Data-parallel training on torch.distributed, launched by ``torchrun`` (no other launcher).

    torchrun --nproc_per_node=2 -m trainer --config configs/default.yaml ...

Each rank trains on its own share of one sampling stream (``RowSampler``: N ranks with batch b
see what one process with batch N*b sees), gradients are averaged by DDP, and hard-negative
feedback from every rank reaches every rank's strategy (``gather_feedback``), so all ranks
sample from the same state. Rank 0 alone writes the run folder, logs, validates and scores;
the others follow its decisions (``broadcast``). gloo on CPU, NCCL on CUDA. Without torchrun's
environment everything here is a no-op for one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["Dist", "init_distributed"]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def gather_feedback(self, rows: np.ndarray, losses: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Every rank's (rows, per-sample losses), concatenated in rank order: the order one
        process with the global batch would report them in."""
        if not self.active:
            return rows, losses
        packed = torch.from_numpy(np.stack([rows.astype(np.float64),
                                            losses.astype(np.float64)]))
        out = [torch.empty_like(packed) for _ in range(self.world)]
        dist.all_gather(out, packed)
        both = torch.cat(out, dim=1).numpy()
        return both[0].astype(np.int64), both[1]

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (stop decisions, epoch to resume from)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed() -> Dist:
    """The process group from torchrun's environment (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``), or a single process when it is absent."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return Dist(0, 1, torch.device("cuda" if cuda else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(),
                torch.device(f"cuda:{local}" if cuda else "cpu"))
