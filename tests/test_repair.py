"""Topology repair: each step against hand-made cases and references, and the promises of the
whole pipeline (a perfect prediction never loses score, repair is idempotent)."""

import dataclasses

import cc3d
import numpy as np
import pytest
from conftest import sheet_mask as _sheet
from scipy import ndimage

from vesuvius_data.metrics import score_volume
from vesuvius_data.metrics.topology import betti_numbers
from vesuvius_data.repair import (
    RepairConfig,
    fill_cavities,
    hysteresis,
    patch_sheet_holes,
    plug_pinholes,
    remove_dust,
    repair,
    split_bridges,
)
from vesuvius_data.synthetic import make_volume

FULL = RepairConfig(threshold=0.5, weak_threshold=0.3, min_component=10, dust_connectivity=6,
                    plug=True, patch_area=64, max_cavity=100)


def _punch(mask, y, x, r, axis0_range=(0, None)):
    out = mask.copy()
    out[slice(*axis0_range), max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1] = False
    return out


def test_hysteresis_matches_a_scipy_reference():
    rng = np.random.default_rng(0)
    prob = ndimage.gaussian_filter(rng.random((30, 31, 32)), 1.5)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    got = hysteresis(prob, 0.7, 0.5)
    lab, n = ndimage.label(prob > 0.5, np.ones((3, 3, 3)))
    keep = np.unique(lab[prob > 0.7])
    expected = np.isin(lab, keep[keep > 0])
    assert got.sum() > (prob > 0.7).sum() and np.array_equal(got, expected)
    assert not hysteresis(np.zeros((4, 4, 4)), 0.7, 0.5).any()


def test_dust_removal_can_count_like_the_topo_score():
    mask = _sheet()
    mask[15, 20, 20] = True  # a speck touching the sheet's top layer (11) only at a corner
    mask[12, 21, 21] = True
    mask[12, 21, 21] = False
    mask[12, 20, 20] = False
    mask[13, 21, 21] = True  # diagonal speck: 26-connected to (12, ...)? no: isolated pair
    speck = np.zeros_like(mask)
    speck[12, 30, 30] = True  # touches (11, 31, 31) of the sheet only at a corner
    m = _sheet() | speck
    m[11, 31, 31] = True
    m[11, 30, 30] = False
    assert betti_numbers(m)[0] == 2  # a second component for TopoScore (6-connected)
    assert remove_dust(m, 5, 26)[12, 30, 30]  # 26-connected it is part of the sheet
    cleaned = remove_dust(m, 5, 6)
    assert not cleaned[12, 30, 30] and betti_numbers(cleaned)[0] == 1
    assert cleaned.sum() == m.sum() - 1


def test_plugging_closes_one_voxel_pinholes_and_never_bridges_sheets():
    sheet = _sheet(tilt=0.1)
    holed = sheet.copy()
    for y, x in ((10, 10), (30, 30), (20, 40)):
        holed = _punch(holed, y, x, 0)
    assert betti_numbers(holed)[1] == 3
    plugged = plug_pinholes(holed)
    assert betti_numbers(plugged)[1] == 0 and not (plugged & ~sheet).sum() > 6
    # two sheets one voxel apart stay two: no voxel between them is added
    pair = _sheet(z=10) | _sheet(z=13)
    assert np.array_equal(plug_pinholes(pair), pair)
    assert np.array_equal(plug_pinholes(plugged), plugged)


def test_patching_fills_small_holes_on_the_sheets_plane_and_keeps_tears():
    sheet = _sheet(tilt=0.15)
    holed = _punch(_punch(sheet, 14, 12, 2), 12, 34, 1)  # 5x5 and 3x3 holes (loops 2)
    torn = _punch(holed, 30, 30, 6)  # a 13x13 tear: a real loop, larger than the limit
    assert betti_numbers(torn)[1] == 3
    patched = patch_sheet_holes(torn, 64)
    assert betti_numbers(patched)[1] == 1
    # the patches follow the sheet's plane: interpolated heights round to the sheet or to the
    # next voxel on its staircase, never further
    off = patched & ~sheet
    assert not (off & ~ndimage.binary_dilation(sheet)).any() and off.sum() <= 6
    assert (sheet & ~patched).sum() == 13 * 13 * 2 + off.sum()


def test_patching_never_pastes_next_to_another_sheet():
    top = _punch(_sheet(z=10), 20, 20, 1)
    # another component right above the hole: a patch voxel would touch it
    other = np.zeros_like(top)
    other[12, 20, 20] = True
    mask = top | other
    assert betti_numbers(mask)[:2] == (2, 1)
    assert np.array_equal(patch_sheet_holes(mask, 64, min_sheet=1), mask)
    # without the neighbour the same hole is patched
    assert betti_numbers(patch_sheet_holes(top, 64))[1] == 0


def test_patching_is_rejected_when_it_would_not_remove_a_loop():
    # a helicoid: one turn around a hole, rising 5 voxels, so the ends do not meet. Its
    # projection has a hole with a single-layer rim, but there is no loop to close: a patch
    # would change the sheet and remove nothing
    shape = (30, 40, 40)
    z, y, x = np.indices(shape)
    theta = np.arctan2(y - 19.5, x - 19.5) + np.pi  # 0 .. 2 pi
    height = 8 + 5 * theta / (2 * np.pi)
    ramp = (np.abs(z - height) < 1) & ((y - 19.5) ** 2 + (x - 19.5) ** 2 > 9)
    assert betti_numbers(ramp)[1] == 0
    assert np.array_equal(patch_sheet_holes(ramp, 64), ramp)


@pytest.mark.parametrize("octants", [False, True])
def test_group_effects_match_references(octants):
    """The plugging kernel's Euler gain per group against the metric's characteristic summed
    over the tiles; its bridge flag against plain scipy labelling."""
    from vesuvius_data.metrics.topology import _euler_characteristic, octant_slices
    from vesuvius_data.repair._common import sheet_labels
    from vesuvius_data.repair.plug import _cuts, _group_effects

    rng = np.random.default_rng(3)
    tiles = octant_slices((12, 13, 14)) if octants else [(slice(None),) * 3]

    def chi(m):
        return sum(_euler_characteristic(np.ascontiguousarray(m[t])) for t in tiles)

    bridges = []
    for density in (0.4, 0.12, 0.4, 0.12, 0.2):  # one sheet, or many
        mask = rng.random((12, 13, 14)) < density
        new = (rng.random(mask.shape) < 0.1) & ~mask
        groups, n = ndimage.label(new, np.ones((3, 3, 3)))
        sheets = sheet_labels(mask)
        gain, bridging = _group_effects(mask, groups.astype(np.int32), n, sheets,
                                        _cuts(mask.shape, octants))
        for g in range(1, n + 1):
            added = groups == g
            assert gain[g] == chi(mask | added) - chi(mask)
            near = ndimage.binary_dilation(added, np.ones((3, 3, 3)))
            assert bridging[g] == (np.unique(sheets[near & mask]).size > 1)
        bridges += list(bridging[1:])
    assert any(bridges) and not all(bridges)  # both cases occur


@pytest.mark.parametrize("seed", range(6))
def test_plugging_never_adds_components_or_loops_in_any_octant(seed):
    """Counted as TopoScore counts them (per octant), on noisy masks where many groups compete
    for the same pieces: the union-find keeps two plugs from closing a loop together."""
    from vesuvius_data.metrics.topology import octant_slices

    rng = np.random.default_rng(seed)
    mask = ndimage.gaussian_filter(rng.random((24, 26, 28)), 1.2) > 0.52
    mask |= _sheet((24, 26, 28), z=5 + seed) & (rng.random(mask.shape) > 0.15)

    def bars(m):
        counts = [betti_numbers(m[t]) for t in octant_slices(m.shape)]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    plugged = plug_pinholes(mask)
    (b0, b1), (c0, c1) = bars(mask), bars(plugged)
    assert c0 <= b0 and c1 <= b1 and (c0, c1) != (b0, b1)


def test_cavities_are_filled_up_to_the_size():
    mask = np.zeros((20, 20, 20), bool)
    mask[5:15, 5:15, 5:15] = True
    mask[9, 9, 9] = False
    mask[6:8, 6:8, 6:8] = False  # 8-voxel cavity
    assert fill_cavities(mask, 1).sum() == mask.sum() + 1
    assert fill_cavities(mask, 8).sum() == 1000


@pytest.mark.parametrize("shape", [(0, 4, 4), (1, 1, 1), (1, 30, 30), (2, 5, 40), (5, 40, 70),
                                   (17, 9, 23)])
def test_every_step_handles_empty_tiny_and_odd_shapes(shape):
    rng = np.random.default_rng(1)
    for prob in (np.zeros(shape), rng.random(shape), np.ones(shape)):
        out = repair(prob, FULL)
        assert out.shape == shape and out.dtype == np.uint8
        assert np.array_equal(repair(out, FULL), out)
    single = np.zeros(shape)
    if single.size:
        single.flat[single.size // 2] = 1.0
        assert repair(single, RepairConfig(plug=True, patch_area=8, max_cavity=8)).sum() == 1


@pytest.mark.parametrize("preset", ["easy", "hard"])
@pytest.mark.parametrize("seed", range(3))
def test_repair_never_lowers_a_perfect_prediction(preset, seed):
    """The filling steps leave a perfect prediction as it is. (Dust removal is a filter: it
    removes true pieces smaller than its size too, which is why the search tunes it.)"""
    _, label = make_volume((64, 64, 64), seed, preset=preset)
    perfect = (label == 1).astype(np.float32)
    filling = dataclasses.replace(FULL, min_component=0)
    repaired = repair(perfect, filling)
    assert score_volume(repaired, label).score >= \
        score_volume(perfect > 0.5, label).score - 1e-12


@pytest.mark.parametrize("seed", range(3))
def test_repair_is_idempotent_and_fixes_noisy_sheets(seed):
    _, label = make_volume((64, 64, 64), seed, preset="hard")
    rng = np.random.default_rng(seed)
    gt = label == 1
    pred = gt & (rng.random(gt.shape) > 0.05)  # 5 % of the surface dropped: pinholes
    pred |= rng.random(gt.shape) < 0.001  # and specks
    once = repair(pred.astype(np.float32), FULL)
    assert np.array_equal(repair(once, FULL), once)
    raw, fixed = score_volume(pred, label), score_volume(once, label)
    assert fixed.betti.pred[1] < raw.betti.pred[1] / 5
    assert fixed.score > raw.score + 0.05


def test_config_checks_and_flags():
    with pytest.raises(ValueError, match="must not exceed"):
        RepairConfig(threshold=0.4, weak_threshold=0.6)
    with pytest.raises(ValueError, match="6 or 26"):
        RepairConfig(dust_connectivity=18)
    with pytest.raises(ValueError, match=">= 0"):
        RepairConfig(patch_area=-1)
    with pytest.raises(ValueError, match="3-D"):
        repair(np.zeros((4, 4)))
    assert FULL.to_flags() == ("--threshold 0.5 --weak-threshold 0.3 --min-component 10 "
                               "--dust-connectivity 6 --plug --patch-area 64 --max-cavity 100")


# ---------------------------------------------------------------------------- bridge cutting
def _two_sheets_and_a_bridge() -> np.ndarray:
    p = np.zeros((20, 20, 30), np.float32)
    p[5:7, 2:18, 2:28] = p[11:13, 2:18, 2:28] = 0.95  # two sheets, a gap of 4
    p[7:11, 8:10, 10:12] = 0.6  # where the model hesitated across the gap
    return p


def test_split_bridges_cuts_a_weak_bridge_between_confident_sheets():
    p = _two_sheets_and_a_bridge()
    mask = p > 0.5
    assert cc3d.connected_components(mask, connectivity=26).max() == 1
    out = split_bridges(p, mask, 0.9, min_seed=10)
    assert cc3d.connected_components(out, connectivity=26).max() == 2
    assert (mask & ~out).sum() <= 8 and not (out & ~mask).any()  # a thin cut inside the bridge
    assert np.array_equal(out[p > 0.9], mask[p > 0.9])  # the sheets themselves stay whole


def test_split_bridges_leaves_each_component_at_most_one_seed_on_smooth_maps():
    # smooth probabilities (the kind in-plane smoothing or TTA averages make) once sent
    # scikit-image's watershed-line mode into minutes and gigabytes; the line drawn here must
    # still separate every pair of confident cores that it cuts apart
    rng = np.random.default_rng(5)
    p = ndimage.gaussian_filter(rng.random((40, 40, 40)).astype(np.float32), 2.0)
    p = (p - p.min()) / (p.max() - p.min())
    mask = p > 0.5
    out = split_bridges(p, mask, 0.75, min_seed=5)
    seeds = cc3d.dust(cc3d.connected_components((p > 0.75) & mask, connectivity=26), 5)
    parts = cc3d.connected_components(out, connectivity=26)
    for part in np.unique(parts[parts > 0]):
        assert len(np.unique(seeds[(parts == part) & (seeds > 0)])) <= 1
    assert cc3d.connected_components(mask, connectivity=26).max() < parts.max()
    assert not (out & ~mask).any() and (mask & ~out).sum() < 0.1 * mask.sum()


def test_split_bridges_leaves_single_cores_and_perfect_masks_alone():
    p = _two_sheets_and_a_bridge()
    one = p.copy()
    one[11:13] = 0  # one sheet with a stub: one seed, nothing to cut
    assert np.array_equal(split_bridges(one, one > 0.5, 0.9, 10), one > 0.5)
    assert np.array_equal(split_bridges(p, p > 0.5, 0.99, 10), p > 0.5)  # no seed at all
    label = make_volume((48, 48, 48), seed=2)[1] == 1
    perfect = label.astype(np.float32)  # p is 0 or 1: every component is one seed
    assert np.array_equal(split_bridges(perfect, label, 0.9), label)
    config = RepairConfig(threshold=0.5, split_seed=0.9)
    assert np.array_equal(repair(perfect, config), label)
    assert np.array_equal(repair(repair(p, config), config), repair(p, config))
    with pytest.raises(ValueError, match="split_seed 0.4 must lie between"):
        RepairConfig(threshold=0.5, split_seed=0.4)
    assert "--split-seed 0.9" in config.to_flags()


def test_printed_flags_parse_back_to_the_same_config():
    """``to_flags`` is what the tuner prints for ``tools/predict.py``: it reproduces the config."""
    import argparse

    from vesuvius_data.repair import add_repair_arguments, repair_config_from_args

    parser = argparse.ArgumentParser()
    add_repair_arguments(parser)
    for config in (RepairConfig(), FULL, RepairConfig(sheet_sigma=2.5, threshold=0.55,
                                                      split_seed=0.9, max_cavity=100)):
        args = parser.parse_args(config.to_flags().split())
        assert repair_config_from_args(args) == config
