"""Training health: the numbers that tell a learning run from a collapsed one, and the alarms.

A run that predicts the majority class everywhere can sit at a flat loss for 50 epochs. These
checks name it within the first epochs after warmup: predicted foreground far from the label's,
balanced accuracy near 0.5, or a loss that stopped moving, each with its likely causes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from trainer.losses import Targets

__all__ = ["Confusion", "HealthMonitor", "batch_report", "LIKELY_CAUSES"]

LIKELY_CAUSES = (
    "likely causes: (1) the ignore label counted as foreground (label_fg far above the "
    "census' surface share of labeled voxels); (2) focal alpha on the wrong class (alpha "
    "weights the SURFACE class); (3) learning rate too low to move or too high to settle; "
    "(4) loss weights that reward one class (e.g. only dice with a tiny smooth)"
)


@dataclass
class Confusion:
    """Voxel counts over valid voxels at threshold 0.5."""

    tp: float = 0.0
    fp: float = 0.0
    fn: float = 0.0
    tn: float = 0.0

    def add(self, logits: torch.Tensor, t: Targets) -> None:
        with torch.no_grad():
            pred = logits.detach().float() > 0
            fg = t.fg > 0.5
            v = t.valid
            self.tp += float((pred & fg & v).sum())
            self.fp += float((pred & ~fg & v).sum())
            self.fn += float((~pred & fg & v).sum())
            self.tn += float((~pred & ~fg & v).sum())

    @property
    def valid(self) -> float:
        return self.tp + self.fp + self.fn + self.tn

    def summary(self) -> dict[str, float]:
        n = max(self.valid, 1.0)
        fg_recall = self.tp / max(self.tp + self.fn, 1.0)
        bg_recall = self.tn / max(self.tn + self.fp, 1.0)
        return {
            "pred_fg": (self.tp + self.fp) / n,
            "label_fg": (self.tp + self.fn) / n,
            "fg_recall": fg_recall,
            "bg_recall": bg_recall,
            "balanced_accuracy": 0.5 * (fg_recall + bg_recall),
            "dice": 2 * self.tp / max(2 * self.tp + self.fp + self.fn, 1.0),
        }


@dataclass
class HealthMonitor:
    """Alarms after warmup; ``check`` returns the messages of this epoch (empty if healthy)."""

    warmup_epochs: int
    ratio_limit: float = 3.0
    balanced_accuracy_floor: float = 0.6
    flat_epochs: int = 3
    flat_relative_change: float = 0.01
    persist: int = 2  # a class-balance alarm needs this many checked epochs in a row
    losses: list[float] = field(default_factory=list)
    streak: int = 0

    def check(self, epoch: int, train_loss: float, stats: dict[str, float]) -> list[str]:
        self.losses.append(train_loss)
        if epoch < self.warmup_epochs:
            return []
        alarms, balance = [], []
        pred, label = stats["pred_fg"], stats["label_fg"]
        ratio = (pred + 1e-6) / (label + 1e-6)
        if ratio > self.ratio_limit or ratio < 1 / self.ratio_limit:
            balance.append(f"COLLAPSE: predicted foreground {pred:.3f} vs label {label:.3f} "
                           f"({ratio:.1f}x) on labeled voxels")
        if stats["balanced_accuracy"] < self.balanced_accuracy_floor:
            balance.append(f"NOT SEPARATING: balanced accuracy {stats['balanced_accuracy']:.3f}"
                           f" (fg recall {stats['fg_recall']:.3f}, bg recall "
                           f"{stats['bg_recall']:.3f}); 0.5 is a constant prediction")
        # a model still leaving warmup may pass through these; one that stays there collapsed
        self.streak = self.streak + 1 if balance else 0
        if self.streak >= self.persist:
            alarms += balance
        recent = self.losses[-(self.flat_epochs + 1):]
        if len(recent) == self.flat_epochs + 1:
            change = abs(recent[0] - recent[-1]) / max(abs(recent[0]), 1e-8)
            if change < self.flat_relative_change:
                alarms.append(f"FLAT LOSS: training loss moved {change:.2%} over the last "
                              f"{self.flat_epochs} epochs ({recent[0]:.4f} -> {recent[-1]:.4f})")
        return [a + "; " + LIKELY_CAUSES for a in alarms]


def batch_report(batches: list[dict[str, Any]], ignore: int, foreground: int,
                 census_share: float, strategy: str) -> tuple[str, list[str]]:
    """Summary of the loader's first batches, and warnings when they look wrong."""
    labels = torch.cat([b["label"].flatten() for b in batches]).long()
    values = sorted(int(v) for v in torch.unique(labels))
    n = labels.numel()
    ignore_share = float((labels == ignore).sum()) / n
    labeled = labels[labels != ignore]
    fg_share = float((labeled == foreground).sum()) / max(labeled.numel(), 1)
    text = (f"first {len(batches)} batches ({strategy}): label values {values}, ignore "
            f"{ignore_share:.1%} of voxels, surface {fg_share:.1%} of labeled voxels "
            f"(dataset {census_share:.1%})")
    warnings = []
    if fg_share > 0.5:
        warnings.append(f"surface is {fg_share:.0%} of labeled voxels in the first batches: "
                        "is the ignore label being counted as foreground?")
    if ignore_share > 0.95:
        warnings.append(f"{ignore_share:.0%} of voxels are unlabeled: the loss sees little; "
                        "raise the strategy's min_labeled_ratio")
    return text, warnings
