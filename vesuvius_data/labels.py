"""Label convention as data, and the label census that every report is built on.

The competition labels are 0 = background, 1 = surface, 2 = unlabeled. Unlabeled voxels are
neither foreground nor background: they are ignored everywhere. Counting them as foreground is
how a real run came to believe its data were "66 % foreground" when the surface is a ~13 %
minority of the *labeled* voxels. Every fraction in this library that is about classes is
therefore computed over labeled voxels, and the census always reports both views side by side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["LabelSpec", "LabelCensus", "count_labels"]


@dataclass(frozen=True)
class LabelSpec:
    """Which label value means what.

    Args:
        background: value of labeled, non-surface voxels.
        foreground: value of the class we segment (the papyrus surface).
        ignore: value of unlabeled voxels; excluded from every loss, statistic and metric.

    Example:
        >>> spec = LabelSpec()
        >>> spec.allowed
        (0, 1, 2)
    """

    background: int = 0
    foreground: int = 1
    ignore: int = 2

    def __post_init__(self) -> None:
        values = (self.background, self.foreground, self.ignore)
        if len(set(values)) != 3:
            raise ValueError(f"LabelSpec values must be distinct, got {values}")
        if not all(0 <= v <= 255 for v in values):
            raise ValueError(f"LabelSpec values must fit uint8 (0..255), got {values}")

    @property
    def allowed(self) -> tuple[int, int, int]:
        return (self.background, self.foreground, self.ignore)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelSpec:
        return cls(**{k: int(v) for k, v in d.items()})

    def check_values(self, counts: np.ndarray, where: str) -> None:
        """Raise if a 256-bin histogram of label values has values outside the spec."""
        bad = [int(v) for v in np.flatnonzero(counts) if v not in self.allowed]
        if bad:
            raise ValueError(
                f"{where}: label values {bad[:10]} are outside the label spec "
                f"(background={self.background}, foreground={self.foreground}, "
                f"ignore={self.ignore})"
            )


@dataclass(frozen=True)
class LabelCensus:
    """Voxel counts per class, with fractions over all voxels and over labeled voxels."""

    background: int
    foreground: int
    ignore: int

    @property
    def total(self) -> int:
        return self.background + self.foreground + self.ignore

    @property
    def labeled(self) -> int:
        return self.background + self.foreground

    def fractions(self) -> dict[str, float]:
        """Fractions over all voxels (what a naive count reports)."""
        t = max(self.total, 1)
        return {
            "background": self.background / t,
            "foreground": self.foreground / t,
            "ignore": self.ignore / t,
        }

    @property
    def foreground_share_of_labeled(self) -> float:
        """Surface voxels / labeled voxels: the number class weights must be built from."""
        return self.foreground / self.labeled if self.labeled else float("nan")

    def __add__(self, other: LabelCensus) -> LabelCensus:
        return LabelCensus(
            self.background + other.background,
            self.foreground + other.foreground,
            self.ignore + other.ignore,
        )

    def to_dict(self) -> dict[str, int]:
        return {"background": self.background, "foreground": self.foreground, "ignore": self.ignore}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelCensus:
        return cls(int(d["background"]), int(d["foreground"]), int(d["ignore"]))

    @classmethod
    def zero(cls) -> LabelCensus:
        return cls(0, 0, 0)


def count_labels(label: np.ndarray, spec: LabelSpec, where: str = "label") -> LabelCensus:
    """Census of one in-memory label array; raises if it holds values outside ``spec``."""
    counts = np.bincount(np.asarray(label, dtype=np.uint8).ravel(), minlength=256)
    spec.check_values(counts, where)
    return LabelCensus(
        int(counts[spec.background]), int(counts[spec.foreground]), int(counts[spec.ignore])
    )
