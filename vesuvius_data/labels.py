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

__all__ = ["LabelSpec", "LabelCensus", "CLASS_WEIGHT_SCHEMES", "count_labels"]


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


def _inverse(f: np.ndarray) -> np.ndarray:
    return 1.0 / (len(f) * f)


def _sqrt_inverse(f: np.ndarray) -> np.ndarray:
    w = 1.0 / np.sqrt(f)
    return w / float((f * w).sum())


#: class-weight schemes over labeled-voxel frequencies f_c; each has frequency-weighted mean 1
CLASS_WEIGHT_SCHEMES = {"inverse": _inverse, "sqrt-inverse": _sqrt_inverse}


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

    def class_weights(self, scheme: str = "inverse") -> dict[str, float]:
        """Class weights from labeled-voxel frequencies f_bg, f_fg (label 2 never counts).

        ``inverse``: w_c = 1 / (K f_c) with K = 2 classes, so the frequency-weighted mean
        f_bg w_bg + f_fg w_fg is exactly 1 and the loss scale is unchanged. ``sqrt-inverse``:
        w_c proportional to 1 / sqrt(f_c), normalised the same way (milder).
        """
        if scheme not in CLASS_WEIGHT_SCHEMES:
            raise ValueError(f"unknown class-weight scheme {scheme!r}; "
                             f"valid: {', '.join(CLASS_WEIGHT_SCHEMES)}")
        if self.labeled == 0 or self.foreground == 0 or self.background == 0:
            raise ValueError("class weights need both classes among labeled voxels; "
                             f"census: {self.to_dict()}")
        f = np.array([self.background, self.foreground], np.float64) / self.labeled
        w = CLASS_WEIGHT_SCHEMES[scheme](f)
        return {"background": float(w[0]), "foreground": float(w[1])}

    def focal_alpha(self) -> float:
        """Focal-loss alpha for the surface class that balances classes: f_bg over labeled."""
        return float(self.background / self.labeled) if self.labeled else 0.5

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
