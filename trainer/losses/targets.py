"""Targets built once from the raw label: no loss ever sees raw label values.

``valid = label != ignore`` and ``fg = label == foreground``. Label 2 (unlabeled) is neither
foreground nor background: it is simply not valid, so it adds nothing to any loss value or
gradient. Building targets in one place is what makes "unlabeled counted as foreground"
impossible downstream.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from vesuvius_data.labels import LabelSpec

__all__ = ["Targets", "make_targets", "TermValue", "float32_term", "masked_sum"]

#: values of the stored skeleton target
SKELETON_SURFACE, SKELETON_GAP = 1, 2


@dataclass
class Targets:
    """Per-voxel targets, each (B, 1, D, H, W).

    valid: bool, label != ignore. fg: float32 0/1, label == foreground (0 where not valid).
    derived: the stored derived targets a batch carries, by role (``vesuvius_data.derived``),
        e.g. ``sdt`` (float32 signed distance to the surface, negative inside, clipped) and
        ``skeleton`` (uint8: 1 on the surface's medial surface, 2 on the medial surface of the
        gaps between sheets). A new target needs no change here.
    """

    valid: torch.Tensor
    fg: torch.Tensor
    derived: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def sdt(self) -> torch.Tensor | None:
        return self.derived.get("sdt")

    @property
    def skeleton(self) -> torch.Tensor | None:
        return self.derived.get("skeleton")

    def require(self, role: str, term: str) -> torch.Tensor:
        """The derived target ``role``, or an error that says how to make it."""
        if role not in self.derived:
            raise ValueError(f"the {term} loss needs the {role!r} target: derive it with "
                             f"`vesuvius-derive STORE` (or set {term}_weight=0)")
        return self.derived[role]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Targets:
        """The same targets with ``fn`` applied to every tensor (e.g. downsampling)."""
        return Targets(fn(self.valid), fn(self.fg), {k: fn(v) for k, v in self.derived.items()})


def make_targets(label: torch.Tensor, spec: LabelSpec | None = None,
                 **derived: torch.Tensor | None) -> Targets:
    """Targets from a raw label batch and any derived targets (``sdt=...``); raises on label
    values outside the spec. Floating derived targets become float32."""
    spec = spec or LabelSpec()
    label = label.long()
    allowed = torch.tensor(spec.allowed, device=label.device)
    bad = ~torch.isin(label, allowed)
    if bad.any():
        vals = torch.unique(label[bad]).tolist()[:10]
        raise ValueError(f"label values {vals} are outside the label spec {spec.allowed}")
    valid = label != spec.ignore
    fg = (label == spec.foreground).float()
    return Targets(valid, fg, {k: v.float() if v.is_floating_point() else v
                               for k, v in derived.items() if v is not None})


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


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of x over mask (B,); x * mask keeps gradients of masked voxels at 0."""
    return (x * mask).flatten(1).sum(1)
