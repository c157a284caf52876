"""Volumes named by id, from a folder of TIFs, a zip of TIFs or a VolumeStore.

The scoring and tuning tools take predictions and labels in any of these forms; a
``VolumeHandle`` is a small picklable handle, so process pools can read volumes themselves.
Every form goes through a checked reader: TIFs (on disk or in a zip) through ``read_tif``'s
truncation checks, a damaged zip is named, and store volumes read through ``ChunkReader``.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .competition import read_tif
from .volume_store import VolumeStore

__all__ = ["VolumeHandle", "pair_ids", "volume_handles"]

#: What zipfile raises for a damaged archive or member: a flipped bit in a header can also ask
#: for a compression method that does not exist (NotImplementedError) or a password
#: (RuntimeError), and a torn deflate stream fails in zlib.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error,
              NotImplementedError, RuntimeError)


@dataclass(frozen=True)
class VolumeHandle:
    kind: str  # "tif" | "zip" | "store"
    path: str
    member: str = ""  # the file in the zip, or the volume id in the store
    role: str = "label"  # which array of a store volume

    @property
    def name(self) -> str:
        """Where the volume is, for messages: the file, the zip member, or the store volume."""
        return {"tif": self.path, "zip": f"{self.path}:{self.member}"}.get(
            self.kind, f"{self.path} (volume {self.member!r})")

    def open(self):
        """The volume as something sliceable: the store's array (read lazily, window by
        window, with checked reads), else the whole volume read into memory."""
        if self.kind == "store":
            return VolumeStore.open(self.path).array(self.member, self.role)
        return self.read()

    def spacing(self) -> tuple[float, float, float] | None:
        """The voxel size a store recorded for this volume; None for TIFs or when unknown."""
        if self.kind != "store":
            return None
        return VolumeStore.open(self.path).info(self.member).spacing

    def read(self) -> np.ndarray:
        if self.kind == "tif":
            return read_tif(self.path)
        if self.kind == "zip":
            name = f"{self.path}:{self.member}"
            try:
                with _open_zip(self.path) as z:
                    data = z.read(self.member)
            except ZIP_ERRORS as e:
                raise ValueError(f"{name}: unreadable zip member ({type(e).__name__}: {e})"
                                 ) from e
            return read_tif(name, data)
        return self.open()[...]


def volume_handles(path: str | Path, role: str = "label") -> dict[str, VolumeHandle]:
    """id -> source for a folder of {id}.tif, a .zip of them, or a VolumeStore (its ``role``)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".zip":
        with _open_zip(path) as z:
            names = sorted(n for n in z.namelist() if n.endswith(".tif"))
        if not names:
            raise FileNotFoundError(f"{path}: no .tif files in the zip")
        return {Path(n).stem: VolumeHandle("zip", str(path), n) for n in names}
    if (path / "zarr.json").is_file():
        return {vid: VolumeHandle("store", str(path), vid, role)
                for vid in VolumeStore.open(path).ids()}
    if path.is_dir():
        tifs = sorted(path.glob("*.tif"))
        if not tifs:
            raise FileNotFoundError(f"{path}: no .tif files and not a VolumeStore")
        return {p.stem: VolumeHandle("tif", str(p)) for p in tifs}
    raise FileNotFoundError(f"{path}: no such folder, .zip or VolumeStore")


def _open_zip(path: str | Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except ZIP_ERRORS as e:
        raise ValueError(f"{path}: not a readable zip file ({type(e).__name__}: {e})") from e


def pair_ids(preds: dict, labels: dict, pred_source: object = "predictions",
             label_source: object = "labels") -> list[str]:
    """The shared ids; any id on one side only is an error (a missing file would bias a mean)
    that names both sources."""
    missing = sorted(set(labels) - set(preds))
    extra = sorted(set(preds) - set(labels))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no prediction for {len(missing)} label id(s): {missing[:5]}")
        if extra:
            parts.append(f"no label for {len(extra)} prediction id(s): {extra[:5]}")
        raise ValueError(f"{pred_source} against {label_source}: " + "; ".join(parts))
    return sorted(labels)
