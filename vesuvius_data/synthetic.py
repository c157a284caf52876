"""Scroll-like synthetic volumes: the project's embedded default dataset.

Each volume is a stack of wavy papyrus sheets 2-4 voxels thick, roughly parallel, some torn,
with CT-like intensities (bright papyrus, darker gaps, air outside the scroll, blur, noise and a
slow intensity drift). Labels follow the competition: 1 on the annotated sheets, 0 in a band
around them, 2 (unlabeled) everywhere else: far from annotated sheets, on sheets nobody
annotated, in unannotated slabs and outside the scroll. The generator aims each volume's census
at the real data (label 0 ~25-39 %, label 1 ~4-9 %, label 2 ~52-71 %) by choosing how many
sheets to annotate and how wide the background band is, so the census holds at any shape.

Everything is deterministic from the seed.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from .labels import LabelSpec

__all__ = ["make_volume", "write_competition_layout", "SCROLL_IDS"]

#: scroll ids as in the competition's train.csv
SCROLL_IDS: tuple[str, ...] = ("26002", "26010", "34117", "35360")

_BAND_MAX = 20.0  # voxels; the background band never reaches further from an annotated sheet


def _wave(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, n: int, amp: float,
          wavelengths: tuple[float, float]) -> np.ndarray:
    """Sum of ``n`` random plane waves over the (a, b) grid, total amplitude ~``amp``."""
    out = np.zeros(np.broadcast_shapes(a.shape, b.shape), np.float32)
    for _ in range(n):
        lam = rng.uniform(*wavelengths)
        theta = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        out += (amp / n) * np.sin(
            2 * np.pi * (a * np.cos(theta) + b * np.sin(theta)) / lam + phase
        ).astype(np.float32)
    return out


def _holes(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, A: int, B: int) -> np.ndarray:
    """Boolean (A, B) mask of a few elliptical tears."""
    mask = np.zeros((A, B), bool)
    for _ in range(rng.integers(1, 4)):
        ca, cb = rng.uniform(0, A), rng.uniform(0, B)
        ra, rb = rng.uniform(4, 0.15 * A + 5), rng.uniform(4, 0.15 * B + 5)
        mask |= ((a - ca) / ra) ** 2 + ((b - cb) / rb) ** 2 < 1
    return mask


def make_volume(
    shape: tuple[int, int, int] = (320, 320, 320),
    seed: int | np.random.SeedSequence = 0,
    spec: LabelSpec | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic (image, label) pair, both uint8 of ``shape``.

    Example:
        >>> image, label = make_volume((64, 64, 64), seed=1)
        >>> image.dtype, label.shape
        (dtype('uint8'), (64, 64, 64))
    """
    spec = spec or LabelSpec()
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be 3-D with every side >= 8, got {shape}")
    rng = np.random.default_rng(seed)
    axis = int(rng.integers(3))  # sheets stack along this axis
    order = [axis] + [i for i in range(3) if i != axis]
    N, A, B = (shape[i] for i in order)
    a = np.arange(A, dtype=np.float32)[:, None]
    b = np.arange(B, dtype=np.float32)[None, :]
    n_idx = np.arange(N, dtype=np.float32)[:, None, None]

    # sheet geometry: a shared deformation and tilt, a small own wave per sheet
    shared = _wave(rng, a, b, 3, rng.uniform(3, 8), (60, 220))
    shared += rng.uniform(-0.12, 0.12) * a + rng.uniform(-0.12, 0.12) * b
    shared -= shared.mean()
    sheet_id = np.full((N, A, B), -1, np.int16)
    heights, halfs = [], []
    c = -_BAND_MAX + rng.uniform(0, 8)
    while c < N + _BAND_MAX:
        h = c + shared + _wave(rng, a, b, 1, rng.uniform(0.5, 2.0), (40, 160))
        half = rng.uniform(1.0, 2.0)  # thickness 2-4 voxels
        tear = _holes(rng, a, b, A, B) if rng.random() < 0.4 else None
        lo = max(int(np.floor(h.min() - half)), 0)
        hi = min(int(np.ceil(h.max() + half)) + 1, N)
        if lo < hi:
            inside = np.abs(n_idx[lo:hi] - h) <= half
            if tear is not None:
                inside &= ~tear
            sheet_id[lo:hi][inside] = len(heights)
        heights.append(h)
        halfs.append(half)
        c += rng.uniform(9, 16)

    # outside the scroll: beyond a wavy cut near one end there is only air
    air = np.zeros((N, A, B), bool)
    if rng.random() < 0.35:
        cut = rng.uniform(0.75, 0.95) * N + shared
        air = n_idx > cut
        sheet_id[air] = -1
    # unannotated slab across the sheets
    slab = np.zeros((N, A, B), bool)
    if rng.random() < 0.5:
        width = int(rng.uniform(0.1, 0.25) * A)
        start = int(rng.integers(0, max(A - width, 1)))
        slab[:, start:start + width, :] = True

    # annotate sheets in random order until the surface share reaches its target; the last
    # one only partly (rows a < a_cut), as annotators label patches of a sheet
    total = N * A * B
    inner = ~slab & (sheet_id >= 0)
    per_row = np.stack(
        [np.bincount(sheet_id[:, i][inner[:, i]], minlength=len(heights)) for i in range(A)],
        axis=1,
    )
    target_fg = rng.uniform(0.045, 0.07) * total
    is_annotated = np.zeros(len(heights) + 1, bool)  # index -1 -> last slot, stays False
    annotated, fg = [], 0
    partial: tuple[int, int] | None = None
    for k in rng.permutation(len(heights)):
        size = int(per_row[k].sum())
        if size == 0:
            continue
        annotated.append(int(k))
        if fg + size <= target_fg:
            is_annotated[k] = True
            fg += size
            continue
        a_cut = int(np.searchsorted(np.cumsum(per_row[k]), target_fg - fg)) + 1
        partial = (int(k), a_cut)
        break
    fg_mask = is_annotated[sheet_id] & ~slab
    if partial is not None:
        k, a_cut = partial
        fg_mask[:, :a_cut, :] |= (sheet_id[:, :a_cut, :] == k) & ~slab[:, :a_cut, :]

    # background band: the voxels nearest to annotated sheets, up to the target share
    dist = np.full((N, A, B), np.inf, np.float32)
    for k in annotated:
        h, half = heights[k], halfs[k]
        lo = max(int(np.floor(h.min() - half - _BAND_MAX)), 0)
        hi = min(int(np.ceil(h.max() + half + _BAND_MAX)) + 1, N)
        np.minimum(dist[lo:hi], np.abs(n_idx[lo:hi] - h) - half, out=dist[lo:hi])
    candidates = (sheet_id < 0) & ~slab & ~air & np.isfinite(dist)
    target_bg = int(rng.uniform(0.27, 0.37) * total)
    cand_d = dist[candidates]
    if cand_d.size > target_bg:
        threshold = np.partition(cand_d, target_bg)[target_bg]
        bg_mask = candidates & (dist < threshold)
    else:
        bg_mask = candidates
    label = np.full((N, A, B), spec.ignore, np.uint8)
    label[bg_mask] = spec.background
    label[fg_mask] = spec.foreground

    # CT-like intensities
    density = np.where(sheet_id >= 0, rng.uniform(150, 185), rng.uniform(60, 85)).astype(np.float32)
    density[air] = rng.uniform(10, 25)
    density = ndimage.gaussian_filter(density, sigma=rng.uniform(0.7, 1.2))
    drift = 1.0 + 0.12 * _wave(rng, a, b, 2, 1.0, (100, 300))
    density *= drift[None]
    density += rng.uniform(8, 16) * rng.standard_normal(density.shape, dtype=np.float32)
    image = np.clip(density, 0, 255).astype(np.uint8)

    inverse = np.argsort(order)
    return (np.ascontiguousarray(image.transpose(inverse)),
            np.ascontiguousarray(label.transpose(inverse)))


def write_competition_layout(
    directory: str | os.PathLike[str],
    n_volumes: int = 4,
    shape: tuple[int, int, int] = (320, 320, 320),
    seed: int = 0,
    *,
    progress: bool = False,
) -> list[str]:
    """Write ``n_volumes`` synthetic volumes in the competition's layout; return their ids.

    Writes ``train.csv`` (``id,scroll_id``), ``train_images/{id}.tif`` and
    ``train_labels/{id}.tif`` as LZW-compressed multi-page uint8 TIFFs, like the real files.
    """
    import tifffile
    from tqdm.auto import tqdm

    root = Path(directory)
    (root / "train_images").mkdir(parents=True, exist_ok=True)
    (root / "train_labels").mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(seed).spawn(n_volumes)
    id_rng = np.random.default_rng(seed)
    ids = [str(10**8 + v) for v in id_rng.choice(9 * 10**8, n_volumes, replace=False)]
    rows = []
    for i, (vid, ss) in enumerate(
        tqdm(list(zip(ids, seeds, strict=True)), desc="synthetic volumes", disable=not progress)
    ):
        image, label = make_volume(shape, ss)
        for sub, data in (("train_images", image), ("train_labels", label)):
            tmp = root / sub / f".{vid}.tif.partial"
            tifffile.imwrite(tmp, data, compression="lzw")
            os.replace(tmp, root / sub / f"{vid}.tif")
        rows.append((vid, SCROLL_IDS[i % len(SCROLL_IDS)]))
    with open(root / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "scroll_id"])
        writer.writerows(rows)
    return ids
