"""Smooth probabilities along the sheets, never across them.

A small model's probabilities are noisy voxel by voxel: along a sheet they dip below the
threshold here and there (pinholes, each one a TopoScore loop) and the sheet's edge wanders by
a voxel (VOI counts every voxel). Averaging over a few voxels *within* the sheet removes both,
while averaging across it would thicken a 2-voxel sheet and fuse neighbours 4 voxels apart.

So the local orientation comes first: the structure tensor of the probabilities (gradient at
``grad_sigma``, products averaged over ``rho``) has the sheet normal as its principal
eigenvector (power iteration). Each voxel then becomes the Gaussian-weighted mean of
trilinear samples on a disc of radius ``2 sigma`` in its own tangent plane. The disc is
sampled in one pass on purpose: two 1-D passes (one per tangent) interpolate twice, and each
trilinear sample off the grid leaks a little across the sheet; on the yardstick that second
leak cost 0.02-0.03 of score at ``sigma`` 2.5. The volume edge is clamped; voxels with
nothing above ``floor`` within reach are copied (background costs nothing).
"""

from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage

__all__ = ["smooth_along_sheets", "structure_tensor"]

#: the six distinct entries of the symmetric structure tensor, in storage order
_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def smooth_along_sheets(prob: np.ndarray, sigma: float, *, rho: float = 2.0,
                        grad_sigma: float = 1.0, floor: float = 0.01) -> np.ndarray:
    """float32 probabilities averaged in each voxel's sheet plane (Gaussian ``sigma`` voxels).

    Example:
        >>> p = np.zeros((9, 9, 9), np.float32); p[4] = 1.0; p[4, 4, 4] = 0.0  # a pinhole
        >>> bool(smooth_along_sheets(p, 1.5)[4, 4, 4] > 0.5)
        True
    """
    p = np.ascontiguousarray(prob, dtype=np.float32)
    if p.ndim != 3:
        raise ValueError(f"smooth_along_sheets needs a 3-D volume, got shape {p.shape}")
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    if sigma == 0 or p.size == 0:
        return p.copy()
    reach = max(int(np.ceil(2 * sigma)), 1)
    active = ndimage.maximum_filter(p, size=2 * reach + 1) > floor
    if not active.any():
        return p.copy()
    tensor = structure_tensor(p, rho=rho, grad_sigma=grad_sigma)
    offsets = np.arange(-reach, reach + 1, dtype=np.float64)
    s, r = np.meshgrid(offsets, offsets, indexing="ij")
    d2 = s ** 2 + r ** 2
    keep = d2 <= (2 * sigma) ** 2  # the disc, radius 2 sigma
    disc = np.stack([s[keep], r[keep], np.exp(-d2[keep] / (2 * sigma ** 2))], axis=1)
    disc[:, 2] /= disc[:, 2].sum()
    out = np.empty_like(p)
    _plane_mean(p, out, tensor, active, disc)
    return out


def structure_tensor(p: np.ndarray, *, rho: float = 2.0, grad_sigma: float = 1.0
                     ) -> np.ndarray:
    """(6, *p.shape) float32: the entries ``_PAIRS`` of the smoothed outer product of the
    Gaussian gradient."""
    grads = [ndimage.gaussian_filter(p, grad_sigma, order=[int(a == k) for a in range(3)])
             for k in range(3)]
    tensor = np.empty((6,) + p.shape, np.float32)
    for n, (i, j) in enumerate(_PAIRS):
        ndimage.gaussian_filter(grads[i] * grads[j], rho, output=tensor[n])
    return tensor


@numba.njit(cache=True)
def _tangents(t: np.ndarray, z: int, y: int, x: int):
    """Two unit tangents of the plane normal to the tensor's principal axis at a voxel."""
    a, b, c = t[0, z, y, x], t[1, z, y, x], t[2, z, y, x]
    d, e, f = t[3, z, y, x], t[4, z, y, x], t[5, z, y, x]
    if a >= d and a >= f:  # start from the axis with the largest diagonal entry
        n0, n1, n2 = 1.0, 0.0, 0.0
    elif d >= f:
        n0, n1, n2 = 0.0, 1.0, 0.0
    else:
        n0, n1, n2 = 0.0, 0.0, 1.0
    for _ in range(12):
        m0 = a * n0 + b * n1 + c * n2
        m1 = b * n0 + d * n1 + e * n2
        m2 = c * n0 + e * n1 + f * n2
        norm = np.sqrt(m0 * m0 + m1 * m1 + m2 * m2)
        if norm < 1e-20:
            break
        n0, n1, n2 = m0 / norm, m1 / norm, m2 / norm
    # first tangent: normal x (the axis least aligned with the normal)
    if abs(n0) <= abs(n1) and abs(n0) <= abs(n2):
        u0, u1, u2 = 0.0, n2, -n1
    elif abs(n1) <= abs(n2):
        u0, u1, u2 = -n2, 0.0, n0
    else:
        u0, u1, u2 = n1, -n0, 0.0
    norm = np.sqrt(u0 * u0 + u1 * u1 + u2 * u2)
    u0, u1, u2 = u0 / norm, u1 / norm, u2 / norm
    return u0, u1, u2, n1 * u2 - n2 * u1, n2 * u0 - n0 * u2, n0 * u1 - n1 * u0


@numba.njit(cache=True)
def _trilinear(p: np.ndarray, z: float, y: float, x: float) -> float:
    """``p`` at a point, linear between voxel centres, clamped at the volume edge."""
    Z, Y, X = p.shape
    z = min(max(z, 0.0), Z - 1.0)
    y = min(max(y, 0.0), Y - 1.0)
    x = min(max(x, 0.0), X - 1.0)
    z0, y0, x0 = int(z), int(y), int(x)
    z1, y1, x1 = min(z0 + 1, Z - 1), min(y0 + 1, Y - 1), min(x0 + 1, X - 1)
    dz, dy, dx = z - z0, y - y0, x - x0
    c00 = p[z0, y0, x0] * (1 - dx) + p[z0, y0, x1] * dx
    c01 = p[z0, y1, x0] * (1 - dx) + p[z0, y1, x1] * dx
    c10 = p[z1, y0, x0] * (1 - dx) + p[z1, y0, x1] * dx
    c11 = p[z1, y1, x0] * (1 - dx) + p[z1, y1, x1] * dx
    return (c00 * (1 - dy) + c01 * dy) * (1 - dz) + (c10 * (1 - dy) + c11 * dy) * dz


@numba.njit(parallel=True, cache=True)
def _plane_mean(src: np.ndarray, out: np.ndarray, tensor: np.ndarray, active: np.ndarray,
                disc: np.ndarray) -> None:
    """out = the ``disc`` (rows: tangent offsets s, r and weight) mean of ``src`` per voxel."""
    Z, Y, X = src.shape
    for z in numba.prange(Z):
        for y in range(Y):
            for x in range(X):
                if not active[z, y, x]:
                    out[z, y, x] = src[z, y, x]
                    continue
                a0, a1, a2, b0, b1, b2 = _tangents(tensor, z, y, x)
                acc = 0.0
                for k in range(disc.shape[0]):
                    s, r = disc[k, 0], disc[k, 1]
                    acc += disc[k, 2] * _trilinear(src, z + s * a0 + r * b0,
                                                   y + s * a1 + r * b1, x + s * a2 + r * b2)
                out[z, y, x] = acc
