"""The weighted compound loss, its registry of terms, and the one place class weights and focal
alpha are chosen.

A new term is its own module (a ``nn.Module`` taking logits and ``Targets``, returning a
``TermValue``) plus one line in ``LOSS_TERMS`` naming its builder and the derived targets it
reads; ``CompoundLoss`` takes weights by term name. Configs set built-in terms through
``LossWeights`` (``loss_weights.dice_weight``), so a term meant for YAML also gets a field there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import nn

from vesuvius_data.labels import LabelCensus

from .boundary import BoundaryLoss
from .cldice import ClDiceLoss
from .connectivity import ConnectivityLoss
from .dice import DiceLoss
from .focal import FocalLoss
from .skeleton_recall import SkeletonRecallLoss
from .targets import Targets

__all__ = ["LossWeights", "LossSettings", "LossTerm", "LOSS_TERMS", "CompoundLoss",
           "LossOutput", "build_loss"]


@dataclass(frozen=True)
class LossSettings:
    """What term builders may read: chosen once by ``build_loss``."""

    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    class_weights: tuple[float, float] | None = None
    cldice_iterations: int = 3
    boundary_clip: float = 10.0


@dataclass(frozen=True)
class LossTerm:
    """A registered term: how to build it, and the derived targets (store roles) it reads."""

    build: Callable[[LossSettings], nn.Module]
    needs: tuple[str, ...] = ()


#: every loss term by name, in the order the epoch line reports them
LOSS_TERMS: dict[str, LossTerm] = {
    "dice": LossTerm(lambda s: DiceLoss()),
    "focal": LossTerm(lambda s: FocalLoss(s.focal_gamma, s.focal_alpha, s.class_weights)),
    "boundary": LossTerm(lambda s: BoundaryLoss(s.boundary_clip), needs=("sdt",)),
    "cldice": LossTerm(lambda s: ClDiceLoss(s.cldice_iterations)),
    "connectivity": LossTerm(lambda s: ConnectivityLoss(), needs=("skeleton",)),
    "skeleton_recall": LossTerm(lambda s: SkeletonRecallLoss(), needs=("skeleton",)),
}


@dataclass
class LossWeights:
    """Weight of each term in the total; a zero weight skips the term entirely."""

    dice_weight: float = 0.3
    focal_weight: float = 0.4
    boundary_weight: float = 0.15
    cldice_weight: float = 0.10
    connectivity_weight: float = 0.05
    skeleton_recall_weight: float = 0.0  # Kirchhoff et al. 2024; off until an ablation says

    def as_dict(self) -> dict[str, float]:
        return {f.name.removesuffix("_weight"): float(getattr(self, f.name))
                for f in fields(self)}


class LossOutput(NamedTuple):
    total: torch.Tensor  # scalar, what backward() runs on
    per_sample: torch.Tensor  # (B,), detached: feedback for the hard-negative strategy
    terms: dict[str, float]  # each term's batch value, for logging


class CompoundLoss(nn.Module):
    """sum_k w_k * term_k(logits, targets) over the registered terms with non-zero weight."""

    def __init__(self, weights: LossWeights | Mapping[str, float] | None = None,
                 settings: LossSettings | None = None) -> None:
        super().__init__()
        weights = weights if weights is not None else LossWeights()
        self.weights = dict(weights.as_dict() if isinstance(weights, LossWeights) else weights)
        unknown = sorted(set(self.weights) - set(LOSS_TERMS))
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown}; registered: "
                             f"{', '.join(LOSS_TERMS)}")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError(f"loss weights must be >= 0, got {self.weights}")
        if not any(self.weights.values()):
            raise ValueError("all loss weights are zero")
        settings = settings or LossSettings()
        self.terms = nn.ModuleDict({name: term.build(settings)
                                    for name, term in LOSS_TERMS.items()
                                    if self.weights.get(name, 0) > 0})

    def needs(self) -> set[str]:
        """Derived targets (store roles) the active terms read."""
        return {role for name in self.terms for role in LOSS_TERMS[name].needs}

    def forward(self, logits: torch.Tensor, targets: Targets) -> LossOutput:
        total = logits.new_zeros((), dtype=torch.float32)
        per_sample = logits.new_zeros(logits.shape[0], dtype=torch.float32)
        values = {}
        for name, term in self.terms.items():
            v = term(logits, targets)
            total = total + self.weights[name] * v.batch
            per_sample = per_sample + self.weights[name] * v.per_sample.detach()
            values[name] = float(v.batch.detach())
        return LossOutput(total, per_sample, values)


def build_loss(weights: LossWeights | None = None, *, focal_gamma: float = 2.0,
               focal_alpha: float | str | None = "auto", use_class_weights: bool | str = "auto",
               background_weight: float = 1.0, foreground_weight: float = 1.0,
               census: LabelCensus | None = None, cldice_iterations: int = 3,
               boundary_clip: float = 10.0,
               log: Callable[[str], Any] = print) -> CompoundLoss:
    """Choose class weights and focal alpha, say what was chosen, build the loss.

    ``use_class_weights``: "auto" takes w_c = 1 / (K f_c) from ``census`` (the training
    volumes'; over LABELED voxels: label 2 never counts); True uses ``background_weight`` /
    ``foreground_weight``; False uses none. Class weights apply to the focal term (dice is
    balanced by design).
    ``focal_alpha`` "auto" is 0.5 when class weights are on (balancing twice would push the
    model to over-predict surface), else the background share f_bg over labeled voxels.
    """
    if use_class_weights not in ("auto", True, False):
        raise ValueError(f"use_class_weights must be 'auto', true or false, got "
                         f"{use_class_weights!r}")
    class_weights = None
    if use_class_weights == "auto":
        if census is None:
            raise ValueError("use_class_weights='auto' needs the training volumes' census")
        w = census.class_weights()
        class_weights = (w["background"], w["foreground"])
        log(f"class weights (auto, inverse frequency over labeled voxels: surface "
            f"{census.foreground_share_of_labeled:.1%}): background {class_weights[0]:.3f}, "
            f"foreground {class_weights[1]:.3f}")
    elif use_class_weights is True:
        class_weights = (float(background_weight), float(foreground_weight))
        log(f"class weights (given): background {class_weights[0]:.3f}, "
            f"foreground {class_weights[1]:.3f}")
    if focal_alpha == "auto":
        if class_weights is not None:
            alpha: float | None = 0.5
            why = "class weights already balance the classes"
        elif census is not None:
            alpha = census.focal_alpha()
            why = "background share of labeled voxels"
        else:
            alpha, why = None, "no census to derive it from"
        log(f"focal alpha (surface class): {alpha} ({why})")
    elif isinstance(focal_alpha, str):
        raise ValueError(f"focal_alpha must be a number, null or 'auto', got {focal_alpha!r}")
    else:
        alpha = focal_alpha
    return CompoundLoss(weights, LossSettings(focal_gamma, alpha, class_weights,
                                              cldice_iterations, boundary_clip))
