"""What the store's manifest says about one volume, and the checks a volume must pass."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..labels import LabelCensus, LabelSpec, count_labels

__all__ = ["VolumeInfo", "validate_pair", "check_volume_id", "check_spacing", "is_url",
           "intensity_stats", "ID_PATTERN", "IMAGE_DTYPES"]

ID_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
#: stored as given; normalisation happens per patch in the loader (``normalize.py``)
IMAGE_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float16,
                                          np.float32))


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
    #: voxel size (z, y, x), in the source's unit (mm for NIfTI); None when nobody said
    spacing: tuple[float, float, float] | None = None
    #: foreground intensity statistics gathered at write (``intensity_stats``), for
    #: dataset-wide normalisations (CT clipping); None for registered volumes
    intensity: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["census"] = self.census.to_dict() if self.census else None
        d["spacing"] = None if self.spacing is None else list(self.spacing)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VolumeInfo:
        """Parse a manifest entry; raises ValueError naming the field a damaged one gets wrong
        (every later reader trusts these types)."""
        bad = _entry_problems(d)
        if bad:
            raise ValueError(f"missing or wrong {', '.join(bad)}")
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
            spacing=None if d.get("spacing") is None else tuple(  # type: ignore[arg-type]
                float(x) for x in d["spacing"]),
            intensity=d.get("intensity"),
        )


def _entry_problems(d: Any) -> list[str]:
    if not isinstance(d, dict):
        return ["entry (not a JSON object)"]

    def optional(key: str, kind: type | tuple[type, ...]) -> bool:
        return d.get(key) is None or isinstance(d[key], kind)

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    bad = [k for k in ("volume_id",) if not isinstance(d.get(k), str)]
    shape = d.get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(count(n) and n > 0
                                                                 for n in shape)):
        bad.append("shape")
    bad += [k for k in ("scroll_id", "source", "generation") if not optional(k, str)]
    census = d.get("census")
    if census is not None and not (isinstance(census, dict) and all(
            count(census.get(k)) for k in ("background", "foreground", "ignore")) and all(
            count(v) for v in (census.get("classes") or {}).values())):
        bad.append("census")
    if not optional("external", dict) or not all(
            isinstance(v, str) for v in (d.get("external") or {}).values()):
        bad.append("external")
    if not optional("derived", dict) or not all(
            isinstance(v, dict) for v in (d.get("derived") or {}).values()):
        bad.append("derived")
    spacing = d.get("spacing")
    if spacing is not None and not (isinstance(spacing, list) and len(spacing) == 3
                                    and all(number(x) and x > 0 for x in spacing)):
        bad.append("spacing")
    intensity = d.get("intensity")
    if intensity is not None and not (isinstance(intensity, dict)
                                      and all(number(v) for v in intensity.values())):
        bad.append("intensity")
    return bad


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
    if image.dtype not in IMAGE_DTYPES:
        raise ValueError(f"{where}: image dtype must be one of "
                         f"{', '.join(map(str, IMAGE_DTYPES))}, got {image.dtype}")
    if image.dtype.kind == "f" and image.size and not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise ValueError(f"{where}: image has {bad} NaN or infinite voxels; replace them "
                         "(e.g. np.nan_to_num) before ingest")
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


def check_spacing(spacing: Any, where: str) -> tuple[float, float, float] | None:
    """Three positive finite voxel sizes (z, y, x), or None."""
    if spacing is None:
        return None
    try:
        out = tuple(float(x) for x in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: spacing must be three numbers (z, y, x), got "
                         f"{spacing!r}") from None
    if len(out) != 3 or not all(np.isfinite(x) and x > 0 for x in out):
        raise ValueError(f"{where}: spacing must be three positive numbers (z, y, x), got "
                         f"{spacing!r}")
    return out  # type: ignore[return-value]


#: foreground voxels sampled per volume for percentiles (nnU-Net samples 10,000 per case)
_SAMPLE = 100_000


def intensity_stats(image: np.ndarray, label: np.ndarray, spec: LabelSpec,
                    seed: int = 0) -> dict[str, float] | None:
    """Statistics of the image over foreground voxels (every class but background and
    ignore): count, mean and std exactly, 0.5 / 99.5 percentiles of a fixed sample. What
    nnU-Net's CT normalisation is built from; None when the volume has no foreground."""
    fg = np.isin(label, list(spec.foreground_classes.values()))
    values = image[fg]
    if values.size == 0:
        return None
    x = values.astype(np.float64)
    sample = x if x.size <= _SAMPLE else np.random.default_rng(seed).choice(x, _SAMPLE,
                                                                           replace=False)
    lo, hi = np.percentile(sample, [0.5, 99.5])
    return {"count": int(x.size), "mean": float(x.mean()), "std": float(x.std()),
            "p00_5": float(lo), "p99_5": float(hi)}
