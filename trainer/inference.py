"""Sliding-window inference over whole volumes, and the post-processing of probabilities.

Windows of the training patch size step over the volume with a given overlap (the last window
of each axis is aligned to the volume's end, so every voxel is covered). Each window is
normalised exactly as the loader normalised training patches (z-score per window by default),
predicted in batches, optionally averaged over the 8 flips (test-time augmentation, in logit
space: a flip that is sure outvotes two that hesitate, where averaging probabilities would let
hesitation win), averaged over the models of an ensemble the same way (the folds of a model
folder: each window is read and normalised once and every model's logits are summed into one
buffer, so memory grows with the window batch, not with the number of folds), and blended
with a Gaussian weight that trusts window centres more than borders (nnU-Net's choice:
sigma = patch / 8). Probabilities are the weighted mean.
Thresholding and topology repair of the result live in ``vesuvius_data.repair``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from vesuvius_data.normalize import NORMALIZERS

from .amp import inference_autocast

__all__ = ["gaussian_weights", "window_corners", "predict_volume", "encode_probabilities",
           "decode_probabilities"]


def gaussian_weights(patch: tuple[int, int, int], sigma_scale: float = 1 / 8) -> np.ndarray:
    """Separable Gaussian over the window, max 1, never below 1e-3 (borders still count)."""
    axes = []
    for n in patch:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2
        axes.append(np.exp(-0.5 * (x / max(n * sigma_scale, 1e-6)) ** 2))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)


def window_corners(shape: tuple[int, ...], patch: tuple[int, ...], overlap: float
                   ) -> list[tuple[int, int, int]]:
    """Corners of windows covering ``shape``; step = patch * (1 - overlap), last at the end."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if any(p > s for p, s in zip(patch, shape, strict=True)):
        raise ValueError(f"patch {tuple(patch)} is larger than the volume {tuple(shape)}; "
                         "predict with a smaller patch or pad the volume")
    per_axis = []
    for s, p in zip(shape, patch, strict=True):
        step = max(int(p * (1 - overlap)), 1)
        starts = list(range(0, s - p + 1, step))
        if starts[-1] != s - p:
            starts.append(s - p)
        per_axis.append(starts)
    return list(itertools.product(*per_axis))  # type: ignore[arg-type]


def _flips(tta: bool) -> list[tuple[int, ...]]:
    if not tta:
        return [()]
    return [tuple(d for d, on in zip((2, 3, 4), bits, strict=True) if on)
            for bits in itertools.product((False, True), repeat=3)]


@torch.no_grad()
def predict_volume(model: torch.nn.Module | Sequence[torch.nn.Module], volume: Any,
                   patch: tuple[int, int, int], *,
                   overlap: float = 0.5, batch_size: int = 2, tta: bool = False,
                   normalize: str = "zscore", gaussian: bool = True,
                   device: torch.device | str | None = None,
                   progress: Callable[[int], Any] | None = None,
                   region: tuple[slice, slice, slice] | None = None) -> np.ndarray:
    """Probabilities (float32) of the surface class, of the whole volume or of ``region``.

    ``model`` is one model or several (an ensemble: their logits are averaged per window).

    ``volume`` is anything sliceable to numpy (numpy, zarr, dask via ``np.asarray``). With
    ``region`` (unit-step slices), the windows are the whole volume's (``window_corners`` of its
    shape), only those that touch the region are read and predicted, and only their parts
    inside it are blended: a region's result equals the same region of the whole-volume
    prediction, so blocks of a scroll can be predicted apart (and in parallel) and stitched.
    """
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3-D, got shape {volume.shape}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    models = [m.to(device).eval() for m in
              ([model] if isinstance(model, torch.nn.Module) else model)]
    norm = NORMALIZERS[normalize]
    weight = gaussian_weights(patch) if gaussian else np.ones(patch, np.float32)
    box = [(0, n) for n in volume.shape] if region is None else [
        s.indices(n)[:2] for s, n in zip(region, volume.shape, strict=True)]
    acc = np.zeros([b - a for a, b in box], np.float32)
    norm_acc = np.zeros_like(acc)
    corners = [c for c in window_corners(tuple(volume.shape), patch, overlap)
               if all(a - p < ci < b for ci, (a, b), p in zip(c, box, patch, strict=True))]
    autocast = inference_autocast(device)
    for start in range(0, len(corners), batch_size):
        batch_corners = corners[start:start + batch_size]
        windows = [norm(np.asarray(volume[z:z + patch[0], y:y + patch[1], x:x + patch[2]]))
                   for z, y, x in batch_corners]
        x = torch.from_numpy(np.stack(windows)[:, None]).to(device)
        logits = torch.zeros_like(x)
        flips = _flips(tta)
        for dims in flips:
            xi = torch.flip(x, dims) if dims else x
            for m in models:
                with autocast:
                    out = m(xi)
                out = (out[0] if isinstance(out, list) else out).float()
                logits += torch.flip(out, dims) if dims else out
        prob = torch.sigmoid(logits / (len(flips) * len(models))).cpu().numpy()[:, 0]
        for corner, p in zip(batch_corners, prob, strict=True):
            # the window's part inside the box, in box and in window coordinates
            lo = [max(c, a) for c, (a, _) in zip(corner, box, strict=True)]
            hi = [min(c + n, b) for c, n, (_, b) in zip(corner, patch, box, strict=True)]
            dst = tuple(slice(x - a, y - a) for x, y, (a, _) in zip(lo, hi, box, strict=True))
            src = tuple(slice(x - c, y - c) for x, y, c in zip(lo, hi, corner, strict=True))
            acc[dst] += p[src] * weight[src]
            norm_acc[dst] += weight[src]
        if progress is not None:
            progress(len(batch_corners))
    return acc / norm_acc


def encode_probabilities(prob: np.ndarray, dtype: str) -> np.ndarray:
    """float16 probabilities, or uint8 as round(255 p) (decode with ``decode_probabilities``)."""
    if dtype == "uint8":
        return np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)
    return prob.astype(np.float16)


def decode_probabilities(data: np.ndarray) -> np.ndarray:
    """float32 probabilities from what ``encode_probabilities`` wrote."""
    if data.dtype == np.uint8:
        return data.astype(np.float32) / 255.0
    if data.dtype.kind != "f":
        raise ValueError(f"probabilities must be float or uint8, got {data.dtype}")
    return data.astype(np.float32)
