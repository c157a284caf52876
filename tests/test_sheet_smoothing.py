"""Sheet smoothing: the kernel against a numpy reference, what it promises on noisy sheets,
the background skip, odd shapes and flags."""

import numpy as np
import pytest
from conftest import sheet_mask
from scipy import ndimage

from vesuvius_data.metrics.topology import betti_numbers
from vesuvius_data.repair import RepairConfig, repair, smooth_along_sheets
from vesuvius_data.repair.smooth import _PAIRS, structure_tensor


def _two_noisy_tilted_sheets(seed=0):
    rng = np.random.default_rng(seed)
    gt = sheet_mask((40, 48, 48), z=8, tilt=0.3) | sheet_mask((40, 48, 48), z=13, tilt=0.3)  # gap 3
    p = np.clip(np.where(gt, 0.75, 0.2) + rng.normal(0, 0.2, gt.shape), 0, 1)
    return p.astype(np.float32), gt


def _smooth_reference(p, sigma):
    """Plain numpy: normals from ``eigh``, disc samples by ``map_coordinates``."""
    t = structure_tensor(p)
    full = np.empty(p.shape + (3, 3), np.float64)
    for n, (i, j) in enumerate(_PAIRS):
        full[..., i, j] = full[..., j, i] = t[n]
    values, vectors = np.linalg.eigh(full)
    normal = vectors[..., :, 2]
    least = np.argmin(np.abs(normal), axis=-1)
    u = np.cross(normal, np.eye(3)[least])
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    v = np.cross(normal, u)
    grid = np.indices(p.shape).astype(np.float64)
    lattice = np.arange(-3, 4) * (2 * sigma / 3)  # the disc's 29 points
    acc, total = np.zeros(p.shape), 0.0
    for s in lattice:
        for r in lattice:
            if s * s + r * r > (2 * sigma) ** 2 * (1 + 1e-9):
                continue
            w = np.exp(-(s * s + r * r) / (2 * sigma ** 2))
            at = grid + np.moveaxis(s * u + r * v, -1, 0)
            acc += w * ndimage.map_coordinates(p, at, order=1, mode="nearest")
            total += w
    return acc / total, values


@pytest.mark.parametrize("sigma", [1.5, 2.5])
def test_sheet_smoothing_matches_a_numpy_reference(sigma):
    p, gt = _two_noisy_tilted_sheets()
    got = smooth_along_sheets(p, sigma, floor=-1.0)  # every voxel, as the reference does
    expected, values = _smooth_reference(p, sigma)
    clear = values[..., 2] > 3 * values[..., 1]  # where the normal is well defined
    assert clear[gt].mean() > 0.9  # on the sheets
    assert np.abs(got - expected)[clear].max() < 1e-4
    assert np.array_equal(got, smooth_along_sheets(p, sigma, floor=-1.0))  # deterministic


def test_sheet_smoothing_closes_pinholes_without_fusing_close_sheets():
    """Two tilted sheets 3 voxels apart, noisy probabilities: the oriented disc recovers them
    almost voxel for voxel with no loop; an isotropic blur of the same strength does not."""
    p, gt = _two_noisy_tilted_sheets()
    raw = p > 0.5
    smoothed = smooth_along_sheets(p, 1.5) > 0.5
    iso = ndimage.gaussian_filter(p, 1.5 / np.sqrt(1.5))
    iso = iso > np.quantile(iso, 1 - gt.mean())  # its best threshold: the true share
    assert betti_numbers(raw)[1] > 100
    assert betti_numbers(smoothed) == (2, 0, 0)
    assert (smoothed != gt).sum() < 0.02 * gt.sum()
    assert (iso != gt).sum() > 5 * (smoothed != gt).sum()


def test_sheet_smoothing_copies_only_voxels_with_nothing_above_floor_within_reach():
    """The skip that makes air cheap must not change a voxel that has data within reach."""
    p, _ = _two_noisy_tilted_sheets()
    p[25:] = np.random.default_rng(3).random(p[25:].shape) * 0.009  # faint, below the floor
    sigma, reach = 2.5, 5
    got, every = smooth_along_sheets(p, sigma), smooth_along_sheets(p, sigma, floor=-1.0)
    data = ndimage.maximum_filter(p, size=2 * reach + 1) > 0.01
    assert np.array_equal(got[data], every[data])
    far = ndimage.maximum_filter(p, size=4 * reach + 1) <= 0.01  # no cell nearby holds data
    assert far.sum() > 10_000 and np.array_equal(got[far], p[far])
    assert not np.array_equal(every[far], p[far])  # smoothing there would have changed them


@pytest.mark.parametrize("shape", [(0, 4, 4), (1, 1, 1), (1, 30, 30), (2, 5, 40), (17, 9, 23)])
def test_sheet_smoothing_handles_empty_tiny_and_odd_shapes(shape):
    rng = np.random.default_rng(2)
    for prob in (np.zeros(shape), rng.random(shape), np.ones(shape)):
        out = smooth_along_sheets(prob, 2.5)
        assert out.shape == shape and out.dtype == np.float32
        assert np.all((out >= 0) & (out <= 1 + 1e-6))
        assert np.allclose(smooth_along_sheets(prob, 0.0), prob)
    assert np.array_equal(smooth_along_sheets(np.ones(shape), 1.5), np.ones(shape, np.float32))


def test_sheet_smoothing_rejects_bad_input_and_round_trips_as_flags():
    with pytest.raises(ValueError, match="3-D"):
        smooth_along_sheets(np.zeros((4, 4)), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        smooth_along_sheets(np.zeros((4, 4, 4)), -1.0)
    with pytest.raises(ValueError, match="sheet_sigma"):
        RepairConfig(sheet_sigma=-1.0)
    config = RepairConfig(sheet_sigma=1.5, threshold=0.55)
    assert config.to_flags() == "--sheet-sigma 1.5 --threshold 0.55"
    p, gt = _two_noisy_tilted_sheets()
    assert np.array_equal(repair(p, config), smooth_along_sheets(p, 1.5) > 0.55)
