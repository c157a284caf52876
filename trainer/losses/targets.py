"""Targets built once from the raw label: no loss ever sees raw label values.

``valid = label != ignore`` and ``fg = label == foreground``. Label 2 (unlabeled) is neither
foreground nor background: it is simply not valid, so it adds nothing to any loss value or
gradient. Building targets in one place is what makes "unlabeled counted as foreground"
impossible downstream.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from vesuvius_data.labels import LabelSpec

__all__ = ["Targets", "make_targets", "TermValue", "float32_term", "masked_sum", "require"]

#: values of the stored skeleton target
SKELETON_SURFACE, SKELETON_GAP = 1, 2


@dataclass
class Targets:
    """Per-voxel targets, each (B, 1, D, H, W).

    valid: bool, label != ignore. fg: float32 0/1, label == foreground (0 where not valid).
    sdt: float32 signed distance to the surface (negative inside), clipped; or None.
    skeleton: uint8, 1 on the surface's medial surface, 2 on the medial surface of the gaps
        between sheets, 0 elsewhere; or None.
    """

    valid: torch.Tensor
    fg: torch.Tensor
    sdt: torch.Tensor | None = None
    skeleton: torch.Tensor | None = None


def make_targets(label: torch.Tensor, spec: LabelSpec | None = None,
                 sdt: torch.Tensor | None = None,
                 skeleton: torch.Tensor | None = None) -> Targets:
    """Targets from a raw label batch; raises on values outside the spec."""
    spec = spec or LabelSpec()
    label = label.long()
    allowed = torch.tensor(spec.allowed, device=label.device)
    bad = ~torch.isin(label, allowed)
    if bad.any():
        vals = torch.unique(label[bad]).tolist()[:10]
        raise ValueError(f"label values {vals} are outside the label spec {spec.allowed}")
    valid = label != spec.ignore
    fg = (label == spec.foreground).float()
    return Targets(valid, fg, None if sdt is None else sdt.float(),
                   None if skeleton is None else skeleton)


class TermValue(NamedTuple):
    """A loss term over the batch (what is optimised) and per sample (hard-negative feedback)."""

    batch: torch.Tensor
    per_sample: torch.Tensor


def float32_term(forward: Callable[..., TermValue]) -> Callable[..., TermValue]:
    """Run a term's forward in float32, autocast off: probabilities saturate in bf16/fp16."""

    @functools.wraps(forward)
    def wrapper(self: Any, logits: torch.Tensor, targets: Targets) -> TermValue:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return forward(self, logits.float(), targets)

    return wrapper


def require(target: torch.Tensor | None, name: str, term: str, weight_key: str) -> torch.Tensor:
    """The derived target ``name``, or an error that says how to make it."""
    if target is None:
        raise ValueError(f"{term} loss needs the {name!r} target: derive it with "
                         f"`python tools/derive.py STORE` (or set {weight_key}=0)")
    return target


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of x over mask (B,); x * mask keeps gradients of masked voxels at 0."""
    return (x * mask).flatten(1).sum(1)
