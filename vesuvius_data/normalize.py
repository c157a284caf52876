"""Image normalisations by name, shared by the loader (per patch) and inference (per volume).

``zscore``: (x - mean) / std over the array, float32, all zeros when flat; integer images go
through a histogram and a lookup table. ``unit``: scaled to [0, 1] by the dtype's maximum.
No torch here: inference and the loader's workers both call it on numpy arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np

__all__ = ["NORMALIZERS"]


@numba.njit(nogil=True, cache=True)
def _histogram(flat, bins):
    h = np.zeros(bins, np.int64)
    for v in flat:
        h[v] += 1
    return h


@numba.njit(nogil=True, cache=True)
def _apply_lut(flat, lut, out):
    for i in range(flat.shape[0]):
        out[i] = lut[flat[i]]


def _zscore(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the patch, float32; all zeros for a flat patch.

    Integer images go through a histogram and a lookup table: one pass to count, one gather
    to write, exact to float32 rounding (``test_zscore_fast_path_equals_numpy``).
    """
    if x.dtype in (np.uint8, np.uint16):
        bins = 256 if x.dtype == np.uint8 else 65536
        h = _histogram(x.ravel(), bins).astype(np.float64)
        values = np.arange(bins, dtype=np.float64)
        n = h.sum()
        mean = (h * values).sum() / n
        var = (h * (values - mean) ** 2).sum() / n
        if var <= 0:
            return np.zeros(x.shape, np.float32)
        lut = ((values - mean) / np.sqrt(var)).astype(np.float32)
        out = np.empty(x.shape, np.float32)
        _apply_lut(np.ascontiguousarray(x).ravel(), lut, out.ravel())
        return out
    x = x.astype(np.float32)
    std = float(x.std())
    return (x - float(x.mean())) / std if std > 0 else np.zeros_like(x)


def _unit(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / float(np.iinfo(x.dtype).max)


#: image normalisations by name
NORMALIZERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"zscore": _zscore, "unit": _unit}
