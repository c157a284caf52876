"""Scroll-like synthetic volumes: the project's embedded default dataset.

Each volume is a stack of wavy papyrus sheets, roughly parallel, some torn, with CT-like
intensities (bright papyrus, darker gaps, air outside the scroll, blur, noise and a slow
intensity drift). How hard a volume is, its *preset*, lives in ``presets.py``.

Labels follow the competition: 1 on the annotated sheets, 0 in a band around them, 2
(unlabeled) everywhere else: far from annotated sheets, on sheets nobody annotated, in
unannotated slabs and outside the scroll. The generator aims each volume's census
at the real data (label 0 ~25-39 %, label 1 ~4-9 %, label 2 ~52-71 %) by choosing how many
sheets to annotate and how wide the background band is, so the census holds at any shape.

Everything is deterministic from the seed.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from .labels import LabelSpec
from .presets import (
    OUT_OF_FAMILY,
    PRESET_CYCLES,
    PRESETS,
    RANDOM_RANGES,
    Preset,
    get_preset,
    preset_cycle,
    random_preset,
)

__all__ = ["make_volume", "write_competition_layout", "SCROLL_IDS", "PRESETS", "PRESET_CYCLES",
           "Preset", "RANDOM_RANGES", "random_preset", "OUT_OF_FAMILY"]

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


def _add_debris(rng: np.random.Generator, density: np.ndarray, free: np.ndarray,
                look: Preset) -> None:
    """Bright blobs of radius 0.8-2.5 voxels, painted only where ``free`` (off the sheets)."""
    n = rng.poisson(look.debris_per_64cube * density.size / 64**3)
    for _ in range(n):
        r = rng.uniform(0.8, 2.5)
        centre = rng.uniform(0, density.shape)
        lo = np.maximum(np.floor(centre - r).astype(int), 0)
        hi = np.minimum(np.ceil(centre + r).astype(int) + 1, density.shape)
        if np.any(hi <= lo):
            continue
        box = tuple(slice(x, y) for x, y in zip(lo, hi, strict=True))
        grid = np.ogrid[box]
        ball = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= r * r
        ball &= free[box]
        density[box][ball] = rng.uniform(*look.debris_density)


def _bias_field(rng: np.random.Generator, shape: tuple[int, ...], amplitude: float
                ) -> np.ndarray:
    """Smooth multiplicative field in [1 - amplitude, 1 + amplitude]: a cubic zoom of a random
    4^3 grid, as scanner inhomogeneity varies over tens of voxels."""
    coarse = rng.uniform(-1.0, 1.0, (4, 4, 4))
    field = ndimage.zoom(coarse, [n / 4 for n in shape], order=3, mode="nearest",
                         grid_mode=True)[: shape[0], : shape[1], : shape[2]]
    field /= max(float(np.abs(field).max()), 1e-6)
    return (1.0 + amplitude * field).astype(np.float32)


def make_volume(
    shape: tuple[int, int, int] = (320, 320, 320),
    seed: int | np.random.SeedSequence = 0,
    spec: LabelSpec | None = None,
    preset: str | Preset = "easy",
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic (image, label) pair, both uint8 of ``shape``.

    Example:
        >>> image, label = make_volume((64, 64, 64), seed=1, preset="hard")
        >>> image.dtype, label.shape
        (dtype('uint8'), (64, 64, 64))
    """
    spec = spec or LabelSpec()
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be 3-D with every side >= 8, got {shape}")
    rng = np.random.default_rng(seed)
    # "random" draws its look from a stream of its own, so the fixed presets' volumes stay
    # what they were for the same seed
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    look = get_preset(preset, np.random.default_rng(ss.generate_state(4)))
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
        h = c + shared + _wave(rng, a, b, 1, rng.uniform(*look.own_wave), (40, 160))
        half = rng.uniform(*look.half_thickness)
        tear = _holes(rng, a, b, A, B) if rng.random() < look.tear_rate else None
        lo = max(int(np.floor(h.min() - half)), 0)
        hi = min(int(np.ceil(h.max() + half)) + 1, N)
        if lo < hi:
            inside = np.abs(n_idx[lo:hi] - h) <= half
            if tear is not None:
                inside &= ~tear
            sheet_id[lo:hi][inside] = len(heights)
        heights.append(h)
        halfs.append(half)
        c += rng.uniform(*look.spacing)

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
    target_fg = rng.uniform(0.045, 0.07) * total * look.seed_share
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
        threshold = np.inf
        bg_mask = candidates
    if look.annotate_region:  # every sheet inside the annotated band is surface
        fg_mask |= (sheet_id >= 0) & (dist < threshold) & ~slab
    label = np.full((N, A, B), spec.ignore, np.uint8)
    label[bg_mask] = spec.background
    label[fg_mask] = spec.foreground

    # CT-like intensities
    density = np.where(sheet_id >= 0, rng.uniform(*look.papyrus),
                       rng.uniform(*look.gap)).astype(np.float32)
    density[air] = rng.uniform(10, 25)
    if look.debris_per_64cube > 0:
        _add_debris(rng, density, (sheet_id < 0) & ~air, look)
    density = ndimage.gaussian_filter(density, sigma=rng.uniform(*look.blur))
    if look.drift > 0:
        density *= 1.0 + look.drift * _wave(rng, a, b, 2, 1.0, (100, 300))[None]
    if look.bias_field > 0:
        density *= _bias_field(rng, density.shape, look.bias_field)
    level = rng.uniform(*look.noise)  # drawn before the field, as always (same volumes)
    noise = rng.standard_normal(density.shape, dtype=np.float32)
    if look.noise_grain > 0:  # grainy, not white: smoothed, then back to unit variance
        noise = ndimage.gaussian_filter(noise, look.noise_grain)
        noise /= max(float(noise.std()), 1e-6)
    density += level * noise
    if look.intensity_scale != 1.0 or look.intensity_offset != 0.0:
        density = density * look.intensity_scale + look.intensity_offset
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
    preset: str | Preset | Sequence[str | Preset] = "easy",
    progress: bool = False,
    split: str = "train",
    workers: int = 1,
) -> list[str]:
    """Write ``n_volumes`` synthetic volumes in the competition's layout; return their ids.

    ``preset`` is one preset, or a sequence that volumes cycle through (``"mixed"`` is
    easy, hard, easy, ...). ``workers`` > 1 makes volumes in that many processes (the same
    volumes: each has its own seed).

    Writes ``{split}.csv`` (``id,scroll_id``), ``{split}_images/{id}.tif`` and
    ``{split}_labels/{id}.tif`` as LZW-compressed multi-page uint8 TIFFs, like the real files
    (``split="test"``: a held-out ``test_images/`` whose labels the competition would keep).
    """
    from concurrent.futures import ProcessPoolExecutor
    from contextlib import ExitStack

    from tqdm.auto import tqdm

    root = Path(directory)
    (root / f"{split}_images").mkdir(parents=True, exist_ok=True)
    (root / f"{split}_labels").mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(seed).spawn(n_volumes)
    id_rng = np.random.default_rng(seed)
    ids = [str(10**8 + v) for v in id_rng.choice(9 * 10**8, n_volumes, replace=False)]
    cycle = preset_cycle(preset)
    jobs = [(root, split, vid, ss, shape, cycle[i % len(cycle)])
            for i, (vid, ss) in enumerate(zip(ids, seeds, strict=True))]
    with ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=n_volumes, desc="synthetic volumes",
                                       disable=None if progress else True))
        run = stack.enter_context(ProcessPoolExecutor(workers)).map if workers > 1 else map
        for _ in run(_write_volume, *zip(*jobs, strict=True)):
            bar.update()
    with open(root / f"{split}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "scroll_id"])
        writer.writerows((vid, SCROLL_IDS[i % len(SCROLL_IDS)]) for i, vid in enumerate(ids))
    return ids


def _write_volume(root: Path, split: str, vid: str, ss: np.random.SeedSequence,
                  shape: tuple[int, int, int], preset: str | Preset) -> None:
    import tifffile

    image, label = make_volume(shape, ss, preset=preset)
    for sub, data in ((f"{split}_images", image), (f"{split}_labels", label)):
        tmp = root / sub / f".{vid}.tif.partial"
        tifffile.imwrite(tmp, data, compression="lzw")
        os.replace(tmp, root / sub / f"{vid}.tif")
