"""What the store's manifest says about one volume, and the checks a volume must pass."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..labels import LabelCensus, LabelSpec, count_labels

__all__ = ["VolumeInfo", "validate_pair", "check_volume_id", "is_url", "ID_PATTERN"]

ID_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_IMAGE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


@dataclass(frozen=True)
class VolumeInfo:
    """What the manifest knows about one volume."""

    volume_id: str
    shape: tuple[int, int, int]
    scroll_id: str | None = None
    source: str | None = None
    census: LabelCensus | None = None  # None for registered volumes until indexed
    external: dict[str, str] = field(default_factory=dict)  # role -> array URL
    #: a new random token each time the volume is written or registered; lets an index tell
    #: an unchanged volume from a rewritten one without reading it
    generation: str | None = None
    #: derived target arrays stored beside the label: role -> parameters they were made with
    derived: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["census"] = self.census.to_dict() if self.census else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VolumeInfo:
        census = d.get("census")
        return cls(
            volume_id=d["volume_id"],
            shape=tuple(int(s) for s in d["shape"]),  # type: ignore[arg-type]
            scroll_id=d.get("scroll_id"),
            source=d.get("source"),
            census=LabelCensus.from_dict(census) if census else None,
            external=dict(d.get("external") or {}),
            generation=d.get("generation"),
            derived=dict(d.get("derived") or {}),
        )


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def check_volume_id(volume_id: str) -> str:
    volume_id = str(volume_id)
    if not ID_PATTERN.match(volume_id):
        raise ValueError(
            f"invalid volume id {volume_id!r}: use letters, digits, '_', '-', '.' "
            "(not starting with '.' or '-')"
        )
    return volume_id


def validate_pair(image: np.ndarray, label: np.ndarray, spec: LabelSpec, where: str) -> LabelCensus:
    """Check an in-memory image/label pair and return the label census.

    Raises ValueError naming ``where`` for non-3-D data, mismatched shapes, unsupported dtypes
    and label values outside the spec.
    """
    if image.ndim != 3:
        raise ValueError(f"{where}: image must be 3-D (z, y, x), got shape {image.shape}")
    if label.ndim != 3:
        raise ValueError(f"{where}: label must be 3-D (z, y, x), got shape {label.shape}")
    if image.shape != label.shape:
        raise ValueError(
            f"{where}: image shape {image.shape} differs from label shape {label.shape}"
        )
    if image.dtype not in _IMAGE_DTYPES:
        raise ValueError(f"{where}: image dtype must be uint8 or uint16, got {image.dtype}")
    if not np.issubdtype(label.dtype, np.integer) and label.dtype != np.bool_:
        raise ValueError(f"{where}: label dtype must be integer, got {label.dtype}")
    if label.dtype != np.uint8 and label.size:
        lo, hi = int(label.min()), int(label.max())
        if lo < 0 or hi > 255:
            raise ValueError(
                f"{where}: label values span [{lo}, {hi}], outside the label spec "
                f"{spec.allowed}"
            )
    return count_labels(label, spec, where)
