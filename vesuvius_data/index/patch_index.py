"""PatchIndex: one row per candidate patch, with its label and intensity statistics.

Columns (struct of arrays, compact dtypes; 24 bytes a row):

=========  ==========  ================================================================
volume     uint16      code into ``volume_ids``
gz gy gx   uint16/32   corner on the stride grid (the corner is ``g * stride``)
surface    int32       voxels with label == foreground
labeled    int32       voxels with label != ignore
tissue     int32       voxels with image > air threshold (in-scroll)
boundary   int32       surface voxels with a 6-neighbour of label == background
class_*    int32       multi-class specs only: voxels of each foreground class
=========  ==========  ================================================================

With a multi-class spec, ``surface`` counts every foreground class together and each
``class_{name}`` one of them (background = labeled - surface): 4 bytes a row per class.

Derived ratios (computed on access, never stored): ``fg_ratio = surface / labeled`` (0 where
nothing is labeled), ``labeled_ratio = labeled / patch voxels``, ``tissue_ratio = tissue /
patch voxels``, ``boundary_ratio = boundary / labeled``. Every class ratio is over labeled voxels.

At scroll scale (10^12 voxels, patch 128, stride 64: ~3.8 M rows) the table is ~91 MB.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write
from ..labels import CLASS_WEIGHT_SCHEMES, LabelCensus, LabelSpec

__all__ = ["PatchIndex", "IndexParams", "COUNT_COLUMNS", "CLASS_WEIGHT_SCHEMES",
           "default_index_path", "default_stride"]

COUNT_COLUMNS: tuple[str, ...] = ("surface", "labeled", "tissue", "boundary")
INDEX_FORMAT = 1


@dataclass(frozen=True)
class IndexParams:
    """What an index was built with; two indexes are comparable only if these agree."""

    patch_size: tuple[int, int, int]
    stride: tuple[int, int, int]
    label_spec: LabelSpec
    air_threshold: int = 0

    def __post_init__(self) -> None:
        for name in ("patch_size", "stride"):
            v = getattr(self, name)
            if len(v) != 3 or any(int(x) < 1 for x in v):
                raise ValueError(f"{name} must be three positive ints, got {v}")
        bad = [(p, s) for p, s in zip(self.patch_size, self.stride, strict=True) if p % s]
        if bad:
            raise ValueError(
                f"patch size {self.patch_size} must be a multiple of the stride {self.stride} "
                "on every axis (patch statistics are sums of whole stride cells); "
                f"e.g. stride {tuple(p // 2 if p % 2 == 0 else p for p in self.patch_size)}"
            )
        if self.patch_voxels > np.iinfo(np.int32).max:
            raise ValueError(f"patch size {self.patch_size} exceeds int32 counts")

    @property
    def patch_voxels(self) -> int:
        return int(np.prod(self.patch_size))

    @property
    def count_columns(self) -> tuple[str, ...]:
        """``COUNT_COLUMNS``, then one ``class_{name}`` per foreground class of a multi-class
        spec (its voxels; ``surface`` is then all foreground classes together)."""
        spec = self.label_spec
        extra = () if spec.is_binary else tuple(f"class_{n}" for n in spec.foreground_classes)
        return COUNT_COLUMNS + extra

    def to_json(self) -> dict[str, Any]:
        return {"patch_size": list(self.patch_size), "stride": list(self.stride),
                "label_spec": self.label_spec.to_dict(), "air_threshold": self.air_threshold}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IndexParams:
        return cls(tuple(d["patch_size"]), tuple(d["stride"]),  # type: ignore[arg-type]
                   LabelSpec.from_dict(d["label_spec"]), int(d["air_threshold"]))


def _table_problem(columns: dict[str, np.ndarray], params: IndexParams,
                   volumes: Any) -> str | None:
    """What is wrong with a loaded patch table, or None: every later reader (samplers, the
    loader's corners) trusts these columns' kinds and the volume codes' range."""
    if not isinstance(volumes, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("shape"), list) and len(v["shape"]) == 3
            for v in volumes.values()):
        return "its volume list is damaged"
    for name in ("volume", "gz", "gy", "gx", *params.count_columns):
        col = columns.get(name)
        if col is None or col.ndim != 1 or col.dtype.kind not in "iu":
            return f"column {name!r} is missing or not a 1-D integer column"
    n = len(columns["volume"])
    if any(len(col) != n for col in columns.values()):
        return "its columns differ in length"
    if n and int(columns["volume"].max()) >= len(volumes):
        return f"volume codes reach {int(columns['volume'].max())}, it lists {len(volumes)}"
    return None


def default_stride(patch: int | tuple[int, ...]) -> int | tuple[int, ...]:
    """The index grid step when none is given: half the patch (at least 1), so every voxel
    lies in 8 candidate patches and a patch can start on any half-patch boundary."""
    if isinstance(patch, int):
        return max(patch // 2, 1)
    return tuple(max(p // 2, 1) for p in patch)


def default_index_path(store: str | os.PathLike[str], patch: int, stride: int) -> Path:
    """Where an index lives unless told otherwise: beside the store, named by its geometry."""
    p = Path(str(store).rstrip("/"))
    return p.parent / f"{p.name}.index_p{patch}_s{stride}.npz"


class PatchIndex:
    """The patch table plus its metadata. Build it with ``build_index`` or ``vesuvius-index``.

    Example:
        >>> index = PatchIndex.load("data.index.npz")          # doctest: +SKIP
        >>> rich = index.subset(index.fg_ratio > 0.1)          # doctest: +SKIP
        >>> index.class_weights()                              # doctest: +SKIP
        {'background': 0.57, 'foreground': 3.85}
    """

    def __init__(self, columns: dict[str, np.ndarray], params: IndexParams,
                 volumes: dict[str, dict[str, Any]], meta: dict[str, Any] | None = None) -> None:
        n = len(columns["volume"])
        for name, col in columns.items():
            if len(col) != n:
                raise ValueError(f"column {name} has {len(col)} rows, expected {n}")
        self.columns = columns
        self.params = params
        #: per volume (in code order): shape, scroll_id, fingerprint, generation, totals
        self.volumes = volumes
        self.meta = dict(meta or {})

    # ------------------------------------------------------------------ basic access
    def __len__(self) -> int:
        return len(self.columns["volume"])

    @property
    def volume_ids(self) -> list[str]:
        return list(self.volumes)

    @property
    def volume(self) -> np.ndarray:
        return self.columns["volume"]

    @property
    def corners(self) -> np.ndarray:
        """(n, 3) int64 voxel corners (z, y, x)."""
        g = np.stack([self.columns[k] for k in ("gz", "gy", "gx")], axis=1).astype(np.int64)
        return g * np.asarray(self.params.stride, np.int64)

    @property
    def surface(self) -> np.ndarray:
        return self.columns["surface"]

    @property
    def labeled(self) -> np.ndarray:
        return self.columns["labeled"]

    @property
    def fg_ratio(self) -> np.ndarray:
        """surface / labeled voxels of each patch (0 where nothing is labeled)."""
        lab = self.columns["labeled"].astype(np.float64)
        return np.divide(self.columns["surface"], lab, out=np.zeros_like(lab), where=lab > 0)

    @property
    def labeled_ratio(self) -> np.ndarray:
        return self.columns["labeled"] / float(self.params.patch_voxels)

    @property
    def tissue_ratio(self) -> np.ndarray:
        return self.columns["tissue"] / float(self.params.patch_voxels)

    @property
    def boundary_ratio(self) -> np.ndarray:
        """Surface voxels touching background / labeled voxels (0 where nothing is labeled)."""
        lab = self.columns["labeled"].astype(np.float64)
        return np.divide(self.columns["boundary"], lab, out=np.zeros_like(lab), where=lab > 0)

    def rows_of(self, volume_id: str) -> np.ndarray:
        """Row numbers of one volume's patches."""
        code = self.volume_ids.index(volume_id)
        return np.flatnonzero(self.columns["volume"] == code)

    def subset(self, rows: np.ndarray) -> PatchIndex:
        """A new index holding only ``rows`` (a boolean mask or row numbers) and only the
        volumes they come from, so that its statistics (census, class weights, focal alpha,
        balanced sampling's threshold) describe what it draws from: a training fold's index
        knows nothing of the validation volumes."""
        columns = {k: v[rows] for k, v in self.columns.items()}
        ids = self.volume_ids
        kept = np.unique(columns["volume"])
        recode = np.zeros(max(len(ids), 1), columns["volume"].dtype)
        recode[kept] = np.arange(len(kept))
        columns["volume"] = recode[columns["volume"]]
        return PatchIndex(columns, self.params, {ids[i]: self.volumes[ids[i]] for i in kept},
                          self.meta)

    def nbytes(self) -> int:
        return int(sum(c.nbytes for c in self.columns.values()))

    # ------------------------------------------------------------------ dataset statistics
    def census(self) -> LabelCensus:
        """Label census over whole volumes (not patches, which overlap)."""
        total = LabelCensus.zero()
        names = [] if self.params.label_spec.is_binary else \
            list(self.params.label_spec.foreground_classes)
        for v in self.volumes.values():
            t = v["totals"]
            total = total + LabelCensus(t["labeled"] - t["surface"], t["surface"],
                                        t["voxels"] - t["labeled"],
                                        tuple((n, t[f"class_{n}"]) for n in names))
        return total

    def class_count(self, name: str) -> np.ndarray:
        """Voxels of class ``name`` in each patch (``background``, ``foreground`` for the
        binary spec, or a class of a multi-class spec)."""
        spec = self.params.label_spec
        if name == "background":
            return self.columns["labeled"] - self.columns["surface"]
        if spec.is_binary and name == "foreground":
            return self.columns["surface"]
        if f"class_{name}" not in self.columns:
            raise ValueError(f"no class {name!r} in the index; classes: "
                             f"{', '.join(spec.class_values)}")
        return self.columns[f"class_{name}"]

    def class_weights(self, scheme: str = "inverse") -> dict[str, float]:
        """``LabelCensus.class_weights`` of this index's volumes."""
        return self.census().class_weights(scheme)

    def focal_alpha(self) -> float:
        """``LabelCensus.focal_alpha`` of this index's volumes."""
        return self.census().focal_alpha()

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temp file + rename): a crash leaves the old file or the new one."""
        meta = {"format": INDEX_FORMAT, "params": self.params.to_json(),
                "volumes": self.volumes, "meta": self.meta}
        with atomic_write(path) as f:
            np.savez(f, __meta__=np.array(json.dumps(meta)), **self.columns)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PatchIndex:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no index at {path}; build one with vesuvius-index")
        try:
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                meta = json.loads(str(z["__meta__"]))
                columns = {k: z[k] for k in z.files if k != "__meta__"}
        except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: not a readable PatchIndex ({type(e).__name__}: {e}); "
                             "rebuild it with vesuvius-index") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: not a PatchIndex (bad metadata); rebuild it")
        if meta.get("format") != INDEX_FORMAT:
            raise ValueError(f"{path}: index format {meta.get('format')} is not "
                             f"{INDEX_FORMAT}; rebuild it")
        if not {"params", "volumes"} <= set(meta):
            raise ValueError(f"{path}: not a PatchIndex (its metadata lacks params and volumes); "
                             "rebuild it with vesuvius-index")
        try:
            params = IndexParams.from_json(meta["params"])
            problem = _table_problem(columns, params, meta["volumes"])
            if problem is None:
                return cls(columns, params, meta["volumes"], meta.get("meta"))
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            problem = f"{type(e).__name__}: {e}"
        raise ValueError(f"{path}: not a PatchIndex this version wrote ({problem}); rebuild it "
                         "with vesuvius-index")

    def __repr__(self) -> str:
        return (f"PatchIndex(rows={len(self)}, volumes={len(self.volumes)}, "
                f"patch={self.params.patch_size}, stride={self.params.stride})")
