"""Numba kernels: reduce a block of label (and image) voxels to per-cell counts.

A *cell* is one box of the stride grid: cell (i, j, k) holds the voxels whose global coordinates
satisfy ``z // sz == i`` and so on. A block may start and end anywhere, so cells on its faces are
partial; the caller sums the partial counts of neighbouring blocks. Each kernel has a plain-numpy
reference in ``tests/test_kernels.py`` and property tests proving they agree.

Counts, in channel order (``CHANNELS``):
  surface   label == foreground
  labeled   label != ignore
  tissue    image > air threshold (in-scroll voxels)
  boundary  surface voxels with a background voxel among their 6 neighbours; neighbours across
            block faces come from a one-voxel halo, so the count is exact for any blocking
  invalid   label values outside the spec (must be zero; reported, not silently counted)

Multi-class specs add one channel per foreground class (voxels of that class value) after
these; ``surface`` is then every foreground class together, and ``boundary`` the foreground
voxels (any class) touching background.
"""

from __future__ import annotations

import numba
import numpy as np

CHANNELS: tuple[str, ...] = ("surface", "labeled", "tissue", "boundary")
N_BASE = len(CHANNELS)


#: longest run counted with 8-bit accumulators (LLVM then packs 32 voxels per AVX2 lane op)
_MAX_RUN = 255


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _count_run(c, cm, cp, zm, zp, ym, yp, fg, bg, ignore):
    """Counts over one run of a row: (surface, background, ignore, boundary).

    ``c`` is the run (at most ``_MAX_RUN`` voxels), ``cm``/``cp`` the run shifted by -1/+1 in
    x, the others the same columns of the four neighbouring rows. All are unit-stride views
    starting at 0, the loop has no branches and its accumulators are uint8 (explicit casts keep
    numba from widening them): that is what lets LLVM vectorise it 32 voxels wide.
    """
    n_fg = np.uint8(0)
    n_bg = np.uint8(0)
    n_ignore = np.uint8(0)
    n_boundary = np.uint8(0)
    for x in range(c.shape[0]):
        v = c[x]
        is_fg = np.uint8(v == fg)
        n_fg = np.uint8(n_fg + is_fg)
        n_bg = np.uint8(n_bg + np.uint8(v == bg))
        n_ignore = np.uint8(n_ignore + np.uint8(v == ignore))
        # some neighbour equals bg iff the minimum of (neighbour XOR bg) is 0: a min tree
        # vectorises better than six compares joined by ORs
        m = min(
            min(min(np.uint8(zm[x] ^ bg), np.uint8(zp[x] ^ bg)),
                min(np.uint8(ym[x] ^ bg), np.uint8(yp[x] ^ bg))),
            min(np.uint8(cm[x] ^ bg), np.uint8(cp[x] ^ bg)),
        )
        n_boundary = np.uint8(n_boundary + (is_fg & np.uint8(m == 0)))
    return int(n_fg), int(n_bg), int(n_ignore), int(n_boundary)


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _count_run_multi(c, cm, cp, zm, zp, ym, yp, bg, ignore):
    """``_count_run`` for multi-class specs: foreground is any value but background and
    ignore. Returns (background, ignore, boundary); classes are counted by ``_count_value``.

    The min tree is written out again rather than shared through an inlined helper: with the
    helper LLVM no longer vectorised either loop (the binary kernel fell from ~1.5 G to
    0.25 G voxels/s)."""
    n_bg = np.uint8(0)
    n_ignore = np.uint8(0)
    n_boundary = np.uint8(0)
    for x in range(c.shape[0]):
        v = c[x]
        is_bg = np.uint8(v == bg)
        is_ig = np.uint8(v == ignore)
        n_bg = np.uint8(n_bg + is_bg)
        n_ignore = np.uint8(n_ignore + is_ig)
        m = min(
            min(min(np.uint8(zm[x] ^ bg), np.uint8(zp[x] ^ bg)),
                min(np.uint8(ym[x] ^ bg), np.uint8(yp[x] ^ bg))),
            min(np.uint8(cm[x] ^ bg), np.uint8(cp[x] ^ bg)),
        )
        is_fg = np.uint8(1) ^ (is_bg | is_ig)
        n_boundary = np.uint8(n_boundary + (is_fg & np.uint8(m == 0)))
    return int(n_bg), int(n_ignore), int(n_boundary)


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _count_value(c, value):
    n = np.uint8(0)
    for x in range(c.shape[0]):
        n = np.uint8(n + np.uint8(c[x] == value))
    return int(n)


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _count_above(row, threshold):
    n = np.uint8(0)
    for x in range(row.shape[0]):
        n = np.uint8(n + np.uint8(row[x] > threshold))
    return int(n)


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _count_block(padded, image, air_mode, origin, stride, cell0, fg, bg, ignore, air, classes,
                 out):
    """Accumulate counts of a block's core into ``out[channel, cz, cy, cx]``.

    ``padded`` is the core label with exactly one voxel of margin on every side: real
    neighbours where the block has them, a sentinel that is never background elsewhere.
    ``origin`` is the global coordinate of the core's first voxel, ``cell0`` the global index
    of out's first cell. Returns the number of invalid label values.

    Each row is cut into runs that share a cell (the same cuts for every row); each run is
    counted by the branch-free ``_count_run`` over unit-stride views (``classes``, the
    foreground class values of a multi-class spec, empty for the binary spec: then
    ``_count_run_multi`` and one ``_count_value`` per class instead).
    """
    nz, ny, nx = padded.shape[0] - 2, padded.shape[1] - 2, padded.shape[2] - 2
    fg8, bg8, ig8 = np.uint8(fg), np.uint8(bg), np.uint8(ignore)
    n_classes = classes.shape[0]
    # x runs: core columns [starts[k], starts[k] + lengths[k]) lie in cell column cols[k];
    # a cell wider than _MAX_RUN is cut into several runs
    starts = np.empty(nx, np.int64)
    lengths = np.empty(nx, np.int64)
    cols = np.empty(nx, np.int64)
    n_runs = 0
    x = 0
    while x < nx:
        cell = (origin[2] + x) // stride[2]
        end = min(nx, (cell + 1) * stride[2] - origin[2], x + _MAX_RUN)
        starts[n_runs], lengths[n_runs], cols[n_runs] = x, end - x, cell - cell0[2]
        n_runs += 1
        x = end
    invalid = 0
    for z in range(nz):
        cz = (origin[0] + z) // stride[0] - cell0[0]
        for y in range(ny):
            cy = (origin[1] + y) // stride[1] - cell0[1]
            c = padded[z + 1, y + 1]
            zm = padded[z, y + 1]
            zp = padded[z + 2, y + 1]
            ym = padded[z + 1, y]
            yp = padded[z + 1, y + 2]
            for k in range(n_runs):
                s = starts[k] + 1  # padded column of the run's first voxel
                length = lengths[k]
                e = s + length
                cx = cols[k]
                if n_classes == 0:
                    n_fg, n_bg, n_ignore, n_boundary = _count_run(
                        c[s:e], c[s - 1:e - 1], c[s + 1:e + 1],
                        zm[s:e], zp[s:e], ym[s:e], yp[s:e], fg8, bg8, ig8,
                    )
                else:
                    n_bg, n_ignore, n_boundary = _count_run_multi(
                        c[s:e], c[s - 1:e - 1], c[s + 1:e + 1],
                        zm[s:e], zp[s:e], ym[s:e], yp[s:e], bg8, ig8,
                    )
                    n_fg = 0
                    for j in range(n_classes):
                        n_j = _count_value(c[s:e], classes[j])
                        n_fg += n_j
                        out[N_BASE + j, cz, cy, cx] += n_j
                if air_mode == 0:
                    n_tissue = _count_above(image[z, y, s - 1:e - 1], air)
                else:
                    n_tissue = length if air_mode == 1 else 0
                n_labeled = length - n_ignore
                invalid += n_labeled - n_fg - n_bg
                out[0, cz, cy, cx] += n_fg
                out[1, cz, cy, cx] += n_labeled
                out[2, cz, cy, cx] += n_tissue
                out[3, cz, cy, cx] += n_boundary
    return invalid


def _pad_block(label: np.ndarray, halo_lo: tuple[int, ...], core: tuple[int, ...],
               sentinel: int) -> np.ndarray:
    """The core with a one-voxel margin: halo voxels where given, ``sentinel`` elsewhere."""
    padded = np.full(tuple(c + 2 for c in core), sentinel, np.uint8)
    src, dst = [], []
    for h, c, n in zip(halo_lo, core, label.shape, strict=True):
        hi = min(n - h - c, 1)  # high-side halo present?
        src.append(slice(h - min(h, 1), h + c + hi))
        dst.append(slice(1 - min(h, 1), 1 + c + hi))
    padded[tuple(dst)] = label[tuple(src)]
    return padded


def count_cells(
    label: np.ndarray,
    image: np.ndarray | None,
    *,
    origin: tuple[int, int, int],
    stride: tuple[int, int, int],
    halo_lo: tuple[int, int, int] = (0, 0, 0),
    core_shape: tuple[int, int, int] | None = None,
    foreground: int = 1,
    background: int = 0,
    ignore: int = 2,
    air_threshold: int = 0,
    classes: tuple[int, ...] = (),
) -> tuple[tuple[int, int, int], np.ndarray, int]:
    """Per-cell counts of one block's core.

    Args:
        label: uint8 block with an optional halo of at most one voxel per side; the core is
            ``label[halo_lo[0]:halo_lo[0] + core[0], ...]``.
        image: the core's image voxels, or None (then every voxel counts as tissue).
        origin: global (z, y, x) of the core's first voxel.
        stride: cell size per axis.
        halo_lo: halo width (0 or 1) on the low side of each axis.
        core_shape: the core's shape; defaults to ``image.shape``, else to the label's shape
            less ``halo_lo`` (no high-side halo).
        air_threshold: image values above it are tissue.
        classes: foreground class values of a multi-class spec (one more channel each;
            ``foreground`` is then unused); empty for the binary spec.

    Returns:
        ``(cell0, counts, invalid)``: global index of the first cell, an int64 array of shape
        ``(len(CHANNELS) + len(classes), cz, cy, cx)``, and the number of label values outside
        the spec.
    """
    if label.dtype != np.uint8:
        raise ValueError(f"label blocks must be uint8, got {label.dtype}")
    if core_shape is not None:
        core = tuple(int(c) for c in core_shape)
    elif image is not None:
        core = tuple(image.shape)
    else:  # no high-side halo
        core = tuple(n - h for n, h in zip(label.shape, halo_lo, strict=True))
    if image is not None and image.shape != core:
        raise ValueError(f"image block {image.shape} differs from core shape {core}")
    cell0 = tuple(o // s for o, s in zip(origin, stride, strict=True))
    cell1 = tuple((o + n - 1) // s + 1 for o, n, s in zip(origin, core, stride, strict=True))
    out = np.zeros((N_BASE + len(classes),) + tuple(max(b - a, 0) for a, b in zip(cell0, cell1,
                                                                          strict=True)), np.int64)
    if min(core) == 0:
        return cell0, out, 0  # type: ignore[return-value]
    # the comparison runs in the image's own dtype (so it vectorises); thresholds outside the
    # dtype's range make every voxel tissue (below) or none (above)
    if image is None:
        img, air_mode, air = np.zeros((1, 1, 1), np.uint8), 1, np.uint8(0)
    else:
        img = np.ascontiguousarray(image)
        info = np.iinfo(img.dtype) if img.dtype.kind in "ui" else np.finfo(img.dtype)
        air_mode = 1 if air_threshold < info.min else 2 if air_threshold >= info.max else 0
        air = img.dtype.type(min(max(air_threshold, info.min), info.max))
    padded = _pad_block(label, halo_lo, core, (background + 1) % 256)
    invalid = _count_block(
        padded, img, air_mode, np.asarray(origin, np.int64),
        np.asarray(stride, np.int64), np.asarray(cell0, np.int64),
        foreground, background, ignore, air, np.asarray(classes, np.uint8), out,
    )
    return cell0, out, int(invalid)  # type: ignore[return-value]
