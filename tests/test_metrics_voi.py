"""VOI against cases with known answers (64^3, one-voxel-thick planar sheets)."""

import numpy as np
import pytest

from vesuvius_data.metrics import variation_of_information


def sheet(*zs, shape=(64, 64, 64)):
    v = np.zeros(shape, np.uint8)
    for z in zs:
        v[z] = 1
    return v


def test_identical_and_both_empty_score_one():
    gt = sheet(10, 40)
    assert variation_of_information(gt, gt).score == 1.0
    assert variation_of_information(np.zeros_like(gt), np.zeros_like(gt)).score == 1.0


def test_one_sheet_empty_prediction_has_no_information_lost():
    r = variation_of_information(np.zeros((64, 64, 64), np.uint8), sheet(10))
    assert r.voi == 0.0 and r.score == 1.0  # one cluster each over the union


def test_two_equal_sheets_empty_prediction_is_one_bit():
    r = variation_of_information(np.zeros((64, 64, 64), np.uint8), sheet(10, 20))
    assert r.merge == pytest.approx(1.0) and r.split == 0.0
    assert r.score == pytest.approx(1 / 1.3)
    assert 0.35 * r.score == pytest.approx(0.269, abs=5e-4)  # the competition's 0.269 case


def test_merge_and_split_directions():
    gt = sheet(10, 12)
    fused = gt.copy()
    fused[11, 5, 5] = 1  # one voxel bridges the two sheets
    r = variation_of_information(fused, gt)
    assert r.merge > 0.9 and r.split < 0.01
    cut = sheet(10)
    cut[10, :, 32] = 0  # the sheet cut in two halves
    r = variation_of_information(cut, sheet(10))
    halves = np.array([32, 31, 1]) / 64  # left, right, and the cut column (predicted 0)
    assert r.split == pytest.approx(-(halves * np.log2(halves)).sum()) and r.merge == 0.0


def test_corner_touching_voxels_are_one_component_and_label_two_is_ignored():
    pred = np.zeros((8, 8, 8), np.uint8)
    pred[2, 2, 2] = pred[3, 3, 3] = 1  # touch only at a corner: one 26-connected component
    gt = pred.copy()
    gt[3, 3, 4] = 1  # face neighbour of (3,3,3): gt is one object either way
    # union {A, B, C}: pred (1, 1, 0), gt (1, 1, 1) -> H(pred | gt) = H(2/3, 1/3) = 0.918;
    # with 6-connectivity pred would be (1, 2, 0) and VOI 0.667
    r = variation_of_information(pred, gt)
    assert r.split == pytest.approx(-(2 / 3) * np.log2(2 / 3) - (1 / 3) * np.log2(1 / 3))
    assert r.merge == 0.0
    gt2 = np.full((8, 8, 8), 2, np.uint8)
    assert variation_of_information(np.ones_like(gt2), gt2).score == 1.0
    assert variation_of_information(gt * 2, gt).score == 1.0  # prediction value 2 counts as 1
    with pytest.raises(ValueError, match="differ in shape"):
        variation_of_information(gt[:4], gt)


def test_equals_the_scorers_skimage_computation():
    """The scorer labels 26-connected components with cc3d, keeps the union of foregrounds and
    calls skimage's variation_of_information(gt, pred), which returns (H(pred|gt), H(gt|pred)):
    its voi_split is our split."""
    import cc3d
    from skimage.metrics import variation_of_information as skimage_vi

    from vesuvius_data.metrics import voi_of_masks

    rng = np.random.default_rng(0)
    for _ in range(10):
        p = rng.random((24, 24, 24)) < rng.uniform(0.05, 0.4)
        g = rng.random((24, 24, 24)) < rng.uniform(0.05, 0.4)
        lp = cc3d.connected_components(p.astype(np.uint8), connectivity=26)
        lg = cc3d.connected_components(g.astype(np.uint8), connectivity=26)
        union = (lp > 0) | (lg > 0)
        split, merge = skimage_vi(lg[union], lp[union])
        r = voi_of_masks(p, g)
        assert r.split == pytest.approx(split, abs=1e-12)
        assert r.merge == pytest.approx(merge, abs=1e-12)
