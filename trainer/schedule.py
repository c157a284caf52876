"""Learning rate: linear warmup, then cosine or poly decay, stepped per iteration."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "poly")


def learning_rate(it: int, base: float, warmup: int, total: int, kind: str = "cosine") -> float:
    """LR at iteration ``it`` (0-based) of ``total``, after ``warmup`` warmup iterations."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
    if it < warmup:
        return base * (it + 1) / warmup
    t = min((it - warmup) / max(total - warmup, 1), 1.0)
    if kind == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * t))
    return base * (1 - t) ** 0.9
