"""Optimizers by name (the ``optimizer`` config key): each builds from the model's parameters
and the config's learning rate and weight decay."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

__all__ = ["OPTIMIZERS", "build_optimizer"]

Builder = Callable[[Iterable[torch.nn.Parameter], float, float], torch.optim.Optimizer]

OPTIMIZERS: dict[str, Builder] = {
    "adamw": lambda params, lr, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
    # nnU-Net's choice: SGD with high Nesterov momentum
    "sgd": lambda params, lr, wd: torch.optim.SGD(params, lr=lr, momentum=0.99, nesterov=True,
                                                  weight_decay=wd),
}


def build_optimizer(name: str, params: Iterable[torch.nn.Parameter], learning_rate: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, learning_rate, weight_decay)
