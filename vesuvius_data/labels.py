"""Label convention as data, and the label census that every report is built on.

The competition labels are 0 = background, 1 = surface, 2 = unlabeled. Unlabeled voxels are
neither foreground nor background: they are ignored everywhere. Counting them as foreground is
how a real run came to believe its data were "66 % foreground" when the surface is a ~13 %
minority of the *labeled* voxels. Every fraction in this library that is about classes is
therefore computed over labeled voxels, and the census always reports both views side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LabelSpec", "LabelCensus", "CLASS_WEIGHT_SCHEMES", "count_labels"]


@dataclass(frozen=True)
class LabelSpec:
    """Which label value means what.

    Args:
        background: value of labeled voxels of no class of interest.
        foreground: value of the class we segment (the papyrus surface); with ``classes``,
            the first of them.
        ignore: value of unlabeled voxels, excluded from every loss, statistic and metric;
            None when every voxel is labeled.
        classes: for multi-class labels, the foreground classes as (name, value) pairs (build
            it with ``LabelSpec.multiclass``); empty for the binary spec.

    Example:
        >>> LabelSpec().allowed
        (0, 1, 2)
        >>> spec = LabelSpec.multiclass(["background", "liver", "kidney", "tumour"], ignore=255)
        >>> spec.class_values
        {'background': 0, 'liver': 1, 'kidney': 2, 'tumour': 3}
    """

    background: int = 0
    foreground: int = 1
    ignore: int | None = 2
    classes: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.classes:
            object.__setattr__(self, "classes", tuple((str(n), int(v)) for n, v in self.classes))
            if self.foreground != self.classes[0][1]:
                raise ValueError(f"foreground {self.foreground} must be the first class's value "
                                 f"{self.classes[0][1]}; build specs with LabelSpec.multiclass")
            names = [n for n, _ in self.classes]
            if "background" in names or len(set(names)) != len(names) or not all(names):
                raise ValueError(f"class names must be distinct, non-empty and not "
                                 f"'background', got {names}")
        values = list(self.class_values.values())
        if self.ignore is not None and self.ignore in values:
            name = next(n for n, v in self.class_values.items() if v == self.ignore)
            raise ValueError(f"the ignore value {self.ignore} is also the value of class "
                             f"{name!r}; choose another ignore value")
        values += [] if self.ignore is None else [self.ignore]
        if len(set(values)) != len(values):
            raise ValueError(f"LabelSpec values must be distinct, got {self.class_values}")
        if not all(0 <= v <= 255 for v in values):
            raise ValueError(f"LabelSpec values must fit uint8 (0..255), got {values}")

    @classmethod
    def multiclass(cls, classes: Sequence[str] | dict[str, int],
                   ignore: int | None = None) -> LabelSpec:
        """A spec of several classes: names (values 0, 1, ...) or name -> value; the first
        class is the background."""
        pairs = list(classes.items()) if isinstance(classes, dict) else \
            [(n, i) for i, n in enumerate(classes)]
        if len(pairs) < 2:
            raise ValueError(f"a label spec needs at least two classes, got {pairs}")
        (_, bg), rest = pairs[0], pairs[1:]
        return cls(background=int(bg), foreground=int(rest[0][1]), ignore=ignore,
                   classes=tuple((str(n), int(v)) for n, v in rest))

    @property
    def is_binary(self) -> bool:
        return not self.classes

    @property
    def foreground_classes(self) -> dict[str, int]:
        """name -> value of every class but the background (binary: {"foreground": value})."""
        return dict(self.classes) if self.classes else {"foreground": self.foreground}

    @property
    def class_values(self) -> dict[str, int]:
        """name -> value of every class, background first."""
        return {"background": self.background} | self.foreground_classes

    @property
    def allowed(self) -> tuple[int, ...]:
        return tuple(self.class_values.values()) + (() if self.ignore is None else
                                                    (self.ignore,))

    @property
    def ignore_value(self) -> int:
        """``ignore``, or a value no class uses when there is none (kernels need a value;
        labels holding it fail the value check)."""
        if self.ignore is not None:
            return self.ignore
        used = set(self.class_values.values())
        return next(v for v in range(255, -1, -1) if v not in used)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"background": self.background, "foreground": self.foreground,
                             "ignore": self.ignore}
        if self.classes:
            d["classes"] = dict(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelSpec:
        classes = tuple((str(n), int(v)) for n, v in (d.get("classes") or {}).items())
        ignore = d.get("ignore")
        return cls(int(d["background"]), int(d["foreground"]),
                   None if ignore is None else int(ignore), classes)

    def describe(self) -> str:
        classes = ", ".join(f"{n}={v}" for n, v in self.class_values.items())
        return f"{classes}, ignore={self.ignore}"

    def check_values(self, counts: np.ndarray, where: str) -> None:
        """Raise if a 256-bin histogram of label values has values outside the spec."""
        bad = [int(v) for v in np.flatnonzero(counts) if v not in self.allowed]
        if bad:
            raise ValueError(
                f"{where}: label values {bad[:10]} are outside the label spec "
                f"({self.describe()})"
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
    """Voxel counts per class, with fractions over all voxels and over labeled voxels.

    ``foreground`` counts every class but the background; multi-class censuses also hold
    each foreground class's count in ``classes`` (name, count), in the spec's order.
    """

    background: int
    foreground: int
    ignore: int
    classes: tuple[tuple[str, int], ...] = ()

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

    def class_counts(self) -> dict[str, int]:
        """name -> labeled voxels of every class, background first (binary: background and
        foreground)."""
        return {"background": self.background} | (dict(self.classes) if self.classes else
                                                   {"foreground": self.foreground})

    def class_weights(self, scheme: str = "inverse") -> dict[str, float]:
        """Class weights from labeled-voxel frequencies f_c (ignored voxels never count).

        ``inverse``: w_c = 1 / (K f_c) for K classes, so the frequency-weighted mean
        sum_c f_c w_c is exactly 1 and the loss scale is unchanged. ``sqrt-inverse``:
        w_c proportional to 1 / sqrt(f_c), normalised the same way (milder).
        """
        if scheme not in CLASS_WEIGHT_SCHEMES:
            raise ValueError(f"unknown class-weight scheme {scheme!r}; "
                             f"valid: {', '.join(CLASS_WEIGHT_SCHEMES)}")
        counts = self.class_counts()
        if self.labeled == 0 or min(counts.values()) == 0:
            raise ValueError("class weights need every class among labeled voxels; "
                             f"census: {self.to_dict()}")
        f = np.array(list(counts.values()), np.float64) / self.labeled
        return dict(zip(counts, map(float, CLASS_WEIGHT_SCHEMES[scheme](f)), strict=True))

    def focal_alpha(self) -> float:
        """Focal-loss alpha for the surface class that balances classes: f_bg over labeled."""
        return float(self.background / self.labeled) if self.labeled else 0.5

    def __add__(self, other: LabelCensus) -> LabelCensus:
        mine, theirs = dict(self.classes), dict(other.classes)
        names = list(mine) + [n for n in theirs if n not in mine]
        return LabelCensus(
            self.background + other.background,
            self.foreground + other.foreground,
            self.ignore + other.ignore,
            tuple((n, mine.get(n, 0) + theirs.get(n, 0)) for n in names),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"background": self.background, "foreground": self.foreground,
                             "ignore": self.ignore}
        if self.classes:
            d["classes"] = dict(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelCensus:
        return cls(int(d["background"]), int(d["foreground"]), int(d["ignore"]),
                   tuple((str(n), int(c)) for n, c in (d.get("classes") or {}).items()))

    @classmethod
    def zero(cls) -> LabelCensus:
        return cls(0, 0, 0)


def count_labels(label: np.ndarray, spec: LabelSpec, where: str = "label") -> LabelCensus:
    """Census of one in-memory label array; raises if it holds values outside ``spec``."""
    counts = np.bincount(np.asarray(label, dtype=np.uint8).ravel(), minlength=256)
    spec.check_values(counts, where)
    fg = {n: int(counts[v]) for n, v in spec.foreground_classes.items()}
    return LabelCensus(
        int(counts[spec.background]), sum(fg.values()),
        0 if spec.ignore is None else int(counts[spec.ignore]),
        () if spec.is_binary else tuple(fg.items()),
    )
