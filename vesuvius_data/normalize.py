"""Image normalisations by name, shared by the loader (per patch) and inference (per volume).

- ``zscore``: (x - mean) / std over the array, float32, all zeros when flat; integer images
  through two numba passes (moments, then the affine map).
- ``unit``: scaled by the dtype's largest value (uint8/uint16 to [0, 1], int16 to [-1, 1]);
  integer images only.
- ``ct``: nnU-Net's CT normalisation: clipped to the 0.5 / 99.5 percentiles of the
  dataset's foreground intensities, then z-scored with their mean and std. The statistics
  are the store's, gathered once per volume at ingest (``VolumeInfo.intensity``) and pooled
  over the loader's volumes (``pool_intensity``), never computed per patch.
- ``window:LO,HI``: clipped to [LO, HI] (e.g. a Hounsfield window) and scaled to [0, 1].

``make_normalizer`` gives the numpy form (inference, and the loader's workers by default);
``DeviceNormalizer`` the same normalisations in torch, for batches that the loader delivers
in their stored dtype (``make_loader(normalize_on="device")``): a uint8 patch is a quarter of
the bytes of its float32 form through the workers' shared memory and over PCIe, and the GPU
normalises a batch in microseconds. The two agree to float32 rounding (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numba
import numpy as np
import torch

__all__ = ["NORMALIZERS", "make_normalizer", "pool_intensity", "needs_statistics",
           "DeviceNormalizer"]


@numba.njit(nogil=True, cache=True)
def _moments(flat):
    s = 0.0
    ss = 0.0
    for v in flat:
        f = float(v)
        s += f
        ss += f * f
    return s, ss


@numba.njit(nogil=True, cache=True)
def _affine(flat, shift, scale, out):
    for i in range(flat.shape[0]):
        out[i] = np.float32((flat[i] - shift) * scale)


def _zscore(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the patch, float32; all zeros for a flat patch.

    Integer images take two numba passes, float64 moments then the affine map, exact to
    float32 rounding (``test_zscore_fast_path_equals_numpy``): as fast as the 256-bin lookup
    table it replaced for uint8, and 2x faster than a 65536-bin one for 16-bit images.
    """
    if x.dtype.kind in "ui":
        flat = np.ascontiguousarray(x).ravel()
        s, ss = _moments(flat)
        n = max(flat.size, 1)
        mean = s / n
        var = max(ss / n - mean * mean, 0.0)
        # one-pass variance loses precision only when std << |mean| (~1e-8 relative): such a
        # patch is flat for any purpose here
        if var <= 1e-12 * max(mean * mean, 1.0):
            return np.zeros(x.shape, np.float32)
        out = np.empty(x.shape, np.float32)
        _affine(flat, mean, 1.0 / np.sqrt(var), out.ravel())
        return out
    x = x.astype(np.float32)
    std = float(x.std())
    return (x - float(x.mean())) / std if std > 0 else np.zeros_like(x)


def _unit(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind not in "ui":
        raise ValueError(f"normalize 'unit' scales by the dtype's maximum and needs an integer "
                         f"image, got {x.dtype}; use 'zscore', 'ct' or 'window:LO,HI'")
    return x.astype(np.float32) / float(np.iinfo(x.dtype).max)


def _clip_zscore(x: np.ndarray, lo: float, hi: float, mean: float, std: float) -> np.ndarray:
    y = np.clip(x.astype(np.float32), lo, hi)
    y -= np.float32(mean)
    y /= np.float32(std if std > 0 else 1.0)
    return y


def _window(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    y = np.clip(x.astype(np.float32), lo, hi)
    y -= np.float32(lo)
    y /= np.float32(hi - lo)
    return y


#: image normalisations that need nothing but the patch, by name
NORMALIZERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"zscore": _zscore, "unit": _unit}


def needs_statistics(name: str) -> bool:
    """Whether ``name`` needs the dataset's intensity statistics (``ct``)."""
    return name == "ct"


def make_normalizer(name: str, statistics: dict[str, float] | None = None
                    ) -> Callable[[np.ndarray], np.ndarray]:
    """The normalisation called ``name`` (see the module docstring); ``ct`` needs the pooled
    ``statistics``. Picklable, for loader workers."""
    if name in NORMALIZERS:
        return NORMALIZERS[name]
    if name == "ct":
        if not statistics:
            raise ValueError("normalize 'ct' needs the dataset's foreground intensity "
                             "statistics (pool_intensity)")
        s = statistics
        return partial(_clip_zscore, lo=s["p00_5"], hi=s["p99_5"], mean=s["mean"],
                       std=s["std"])
    if name.startswith("window:"):
        try:
            lo, hi = (float(v) for v in name.removeprefix("window:").split(","))
        except ValueError:
            raise ValueError(f"normalize {name!r}: write the window as window:LO,HI, e.g. "
                             "window:-1000,400") from None
        if not hi > lo:
            raise ValueError(f"normalize {name!r}: the window needs LO < HI")
        return partial(_window, lo=lo, hi=hi)
    raise ValueError(f"unknown normalize {name!r}; valid: {', '.join(NORMALIZERS)}, ct, "
                     "window:LO,HI")


@dataclass(frozen=True)
class DeviceNormalizer:
    """``make_normalizer(name, statistics)`` in torch, per sample of a batch ``(B, ...)`` of
    any dtype, on the batch's device; float32 out. Picklable, small: the normalisation
    parameters that travel with a stored-dtype batch."""

    name: str
    statistics: dict[str, float] | None = None

    def __post_init__(self) -> None:
        # the numpy form's parameters (ct's clip and moments, the window): one parse, one
        # source of truth for names and errors
        numpy_form = make_normalizer(self.name, self.statistics)
        object.__setattr__(self, "_params", dict(getattr(numpy_form, "keywords", {})))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = self._params  # type: ignore[attr-defined]
        if self.name == "zscore":
            return _zscore_batch(x)
        if self.name == "unit":
            if x.is_floating_point():
                raise ValueError(f"normalize 'unit' needs an integer image, got {x.dtype}")
            return x.float() / float(torch.iinfo(x.dtype).max)
        y = x.float().clamp_(p["lo"], p["hi"])
        if self.name == "ct":
            return y.sub_(p["mean"]).div_(p["std"] if p["std"] > 0 else 1.0)
        return y.sub_(p["lo"]).div_(p["hi"] - p["lo"])  # window:LO,HI


def _zscore_batch(x: torch.Tensor) -> torch.Tensor:
    """``_zscore`` of each sample: float64 moments (as the numba pass), float32 affine map,
    zeros for a flat sample."""
    dims = tuple(range(1, x.ndim))
    wide = x.double()
    mean = wide.mean(dim=dims, keepdim=True)
    var = (wide.square().mean(dim=dims, keepdim=True) - mean.square()).clamp_(min=0.0)
    flat = var <= 1e-12 * mean.square().clamp(min=1.0)
    scale = torch.where(flat, torch.zeros_like(var), var.rsqrt())
    return ((wide - mean) * scale).float()


def pool_intensity(per_volume: Sequence[dict[str, float]]) -> dict[str, float]:
    """One set of statistics from per-volume ones: count, mean and std pooled exactly; the
    percentiles as count-weighted means of the volumes' (nnU-Net pools samples instead;
    this keeps the store's manifest small, and volumes of one modality agree closely)."""
    if not per_volume:
        raise ValueError("no intensity statistics to pool")
    n = np.array([s["count"] for s in per_volume], np.float64)
    mean = np.array([s["mean"] for s in per_volume])
    var = np.array([s["std"] for s in per_volume]) ** 2
    total = n.sum()
    m = float((n * mean).sum() / total)
    v = float((n * (var + (mean - m) ** 2)).sum() / total)
    w = n / total
    return {"count": int(total), "mean": m, "std": float(np.sqrt(v)),
            "p00_5": float((w * [s["p00_5"] for s in per_volume]).sum()),
            "p99_5": float((w * [s["p99_5"] for s in per_volume]).sum())}
