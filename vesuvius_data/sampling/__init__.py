"""Sampling strategies over a PatchIndex, registered by name in ``STRATEGIES``."""

from . import balanced, hard_negative, label_weighted, uniform  # noqa: F401  (registration)
from .base import STRATEGIES, CdfSampler, Strategy, make_strategy, register

__all__ = ["STRATEGIES", "CdfSampler", "Strategy", "make_strategy", "register",
           "StrategySampler"]


def __getattr__(name: str):  # torchio is imported only by those who use the adapter
    if name == "StrategySampler":
        from .torchio_adapter import StrategySampler

        return StrategySampler
    raise AttributeError(name)
