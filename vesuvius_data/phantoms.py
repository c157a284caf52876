"""Synthetic multi-class data for projects beyond the scrolls: an abdominal CT phantom
(``make_organ_phantom``: int16 Hounsfield units, liver, kidney and a rare tumour, an ignore
value outside the body, anisotropic voxels) and the scroll labels split into depth classes
(``split_surface_by_depth``), so the multi-class index, strategies and loader have data whose
answers are known.
"""

from __future__ import annotations

import numpy as np

from .labels import LabelSpec

__all__ = ["make_organ_phantom", "PHANTOM_CLASSES", "split_surface_by_depth", "DEPTH_CLASSES"]


#: the phantom's classes, background first: what ``make_organ_phantom`` labels
PHANTOM_CLASSES: tuple[str, ...] = ("background", "liver", "kidney", "tumour")


def make_organ_phantom(shape: tuple[int, int, int] = (48, 96, 96), seed: int = 0,
                       spacing: tuple[float, float, float] = (2.5, 0.8, 0.8)
                       ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """An abdominal CT phantom for projects beyond Vesuvius: an int16 image in Hounsfield
    units (air -1000, body ~40, liver ~60, kidneys ~30, a tumour ~110 inside the liver, noise
    of sd 15), a uint8 label with ``PHANTOM_CLASSES`` (0-3, the tumour a rare class of a few
    per mille) and 255 outside the body (unlabeled, for ``ignore=255``), and an anisotropic
    voxel size (z, y, x) in mm. Organs are ellipsoids in millimetres, so they keep their
    shape whatever the spacing; positions and sizes vary with ``seed``.
    """
    rng = np.random.default_rng(seed)
    z, y, x = (np.arange(n, dtype=np.float32) * s for n, s in zip(shape, spacing, strict=True))
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij", sparse=True)
    size = [n * s for n, s in zip(shape, spacing, strict=True)]

    def ellipsoid(centre, radii):
        return sum(((a - c) / r) ** 2 for a, c, r in zip((zz, yy, xx), centre, radii,
                                                         strict=True)) <= 1

    jitter = lambda lo, hi: rng.uniform(lo, hi)  # noqa: E731
    body = ellipsoid([size[0] / 2, size[1] / 2, size[2] / 2],
                     [size[0], size[1] * 0.45, size[2] * 0.47])
    liver_c = [size[0] * jitter(0.4, 0.6), size[1] * jitter(0.35, 0.45),
               size[2] * jitter(0.3, 0.4)]
    liver = ellipsoid(liver_c, [size[0] * 0.3, size[1] * 0.18, size[2] * 0.16]) & body
    kidneys = np.zeros(shape, bool)
    for side in (0.68, 0.8):
        kidneys |= ellipsoid([size[0] * jitter(0.4, 0.6), size[1] * jitter(0.55, 0.65),
                              size[2] * side], [size[0] * 0.2, size[1] * 0.07,
                                                size[2] * 0.04])
    kidneys &= body & ~liver
    tumour = ellipsoid([c + rng.uniform(-2, 2) for c in liver_c],
                       [min(size) * jitter(0.04, 0.06)] * 3) & liver
    label = np.full(shape, 255, np.uint8)
    label[body] = 0
    for value, mask in ((1, liver), (2, kidneys), (3, tumour)):
        label[mask] = value
    hu = np.full(shape, -1000.0, np.float32)
    hu[body] = 40
    hu[liver], hu[kidneys], hu[tumour] = 60, 30, 110
    hu += rng.normal(0, 15, shape).astype(np.float32)
    return np.clip(hu, -1024, 3071).astype(np.int16), label, tuple(map(float, spacing))


#: the spec of ``split_surface_by_depth`` labels
DEPTH_CLASSES = LabelSpec.multiclass({"background": 0, "top": 1, "middle": 3, "bottom": 4},
                                     ignore=2)


def split_surface_by_depth(label: np.ndarray) -> np.ndarray:
    """The same label geometry with four classes (``DEPTH_CLASSES``): the surface (1) split
    by depth thirds into classes 1, 3 and 4, background 0 and unlabeled 2 kept. Benchmarks
    compare multi-class and binary runs on exactly the same voxels with it."""
    out = label.copy()
    third = label.shape[0] // 3
    out[third:2 * third][label[third:2 * third] == 1] = 3
    out[2 * third:][label[2 * third:] == 1] = 4
    return out
