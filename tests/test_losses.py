"""The compound loss: hand-computed values, conventions, ignore invariance, ranking, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from trainer.losses import (
    BoundaryLoss,
    ClDiceLoss,
    CompoundLoss,
    ConnectivityLoss,
    DiceLoss,
    FocalLoss,
    LossSettings,
    LossTerm,
    LossWeights,
    TermValue,
    build_loss,
    make_targets,
)
from trainer.losses.compound import LOSS_TERMS
from vesuvius_data import VolumeSource, build_index
from vesuvius_data.derived import medial_skeleton, signed_distance
from vesuvius_data.synthetic import make_volume


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def t5(values, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype).reshape(1, 1, 1, 1, -1)


def test_dice_by_hand():
    label, logits = t5([1, 0, 2, 1], torch.uint8), t5([0.0, 0.0, 5.0, -5.0])
    inter = 0.5 + sig(-5)
    expected = 1 - (2 * inter + 1) / ((0.5 + 0.5 + sig(-5)) + 2 + 1)
    v = DiceLoss(smooth=1.0)(logits, make_targets(label))
    assert float(v.batch) == pytest.approx(expected, rel=1e-6)
    assert float(v.per_sample[0]) == pytest.approx(expected, rel=1e-6)


def test_focal_by_hand_and_alpha_convention():
    label, logits = t5([1, 0, 2, 1], torch.uint8), t5([0.0, 0.0, 5.0, -5.0])
    ln2 = math.log(2)
    fg_half = 0.25 * ln2 * 0.25  # (1 - 0.5)^2 * ce * alpha
    bg_half = 0.25 * ln2 * 0.75  # background gets 1 - alpha
    miss = (1 - sig(-5)) ** 2 * math.log(1 + math.exp(5)) * 0.25
    v = FocalLoss(gamma=2.0, alpha=0.25)(logits, make_targets(label))
    assert float(v.batch) == pytest.approx((fg_half + bg_half + miss) / 3, rel=1e-5)
    # alpha = 1: background voxels cost nothing, whatever the prediction
    bg_only = t5([0, 0, 2, 0], torch.uint8)
    assert float(FocalLoss(alpha=1.0)(t5([9.0, -3, 0, 4]), make_targets(bg_only)).batch) == 0
    # class weights multiply per class
    w = FocalLoss(gamma=0.0, class_weights=(0.5, 4.0))(logits, make_targets(label)).batch
    expected = (4.0 * ln2 + 0.5 * ln2 + 4.0 * math.log(1 + math.exp(5))) / 3
    assert float(w) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="alpha must be in"):
        FocalLoss(alpha=1.5)


@pytest.fixture(scope="module")
def sheet_patch():
    """A 48^3 synthetic patch with its derived targets."""
    _, label = make_volume((48, 48, 48), seed=21)
    sdt = signed_distance(label, clip=10.0)
    skel = medial_skeleton(label, clip=10.0)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None, None]  # noqa: E731
    return label, make_targets(as_t(label), sdt=as_t(sdt), skeleton=as_t(skel))


def all_terms() -> CompoundLoss:
    return CompoundLoss(LossWeights(), LossSettings(focal_gamma=2.0, focal_alpha=0.5,
                                                    class_weights=(0.6, 3.0),
                                                    cldice_iterations=3))


def test_ignore_voxels_change_neither_loss_nor_gradients(sheet_patch):
    label, targets = sheet_patch
    ignore = torch.from_numpy(label == 2)[None, None]
    base = torch.randn((1, 1, 48, 48, 48), generator=torch.Generator().manual_seed(0))
    loss = all_terms()
    grads, values = [], []
    for noise_seed in (1, 2):
        noise = torch.randn(base.shape, generator=torch.Generator().manual_seed(noise_seed))
        logits = torch.where(ignore, 10 * noise, base).requires_grad_(True)
        out = loss(logits, targets)
        out.total.backward()
        grads.append(logits.grad.clone())
        values.append(out)
    assert values[0].total.detach().item() == values[1].total.detach().item()
    assert values[0].terms == values[1].terms
    assert torch.equal(grads[0], grads[1])
    assert torch.all(grads[0][ignore] == 0)


def test_unlabeled_never_acts_as_foreground():
    label = torch.full((1, 1, 8, 8, 8), 2, dtype=torch.uint8)
    label[..., :2] = 0  # a quarter labeled, all background; the rest unlabeled
    targets = make_targets(label)
    fg_everywhere, bg_everywhere = torch.full(label.shape, 8.0), torch.full(label.shape, -8.0)
    for term in (DiceLoss(), FocalLoss(alpha=0.5)):
        assert float(term(fg_everywhere, targets).batch) > float(term(bg_everywhere,
                                                                      targets).batch)
    # ... and only the labeled quarter decides: saying "foreground" there is what costs
    half = bg_everywhere.clone()
    half[..., 2:] = 8.0  # foreground only on unlabeled voxels
    assert float(FocalLoss()(half, targets).batch) == float(FocalLoss()(bg_everywhere,
                                                                        targets).batch)


def _logits(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.where(mask, 6.0, -6.0).astype(np.float32))[None, None]


def test_ground_truth_ranks_best_with_default_weights(sheet_patch):
    label, targets = sheet_patch
    fg = label == 1
    normal = int(np.argmax([np.abs(np.diff(fg.astype(int), axis=a)).sum() for a in range(3)]))
    holed = fg.copy()
    cz, cy, cx = np.argwhere(fg)[fg.sum() // 2]  # a hole in the middle of the annotations
    holed[cz - 6:cz + 6, cy - 6:cy + 6, cx - 6:cx + 6] = False
    assert holed.sum() < fg.sum() - 50
    candidates = {
        "all foreground": np.ones_like(fg), "all background": np.zeros_like(fg),
        "dilated": ndimage.binary_dilation(fg, iterations=2),
        "eroded": ndimage.binary_erosion(fg), "shifted": np.roll(fg, 3, axis=normal),
        "holed": holed,
    }
    loss = build_loss(LossWeights(), focal_gamma=2.0, focal_alpha="auto",
                      use_class_weights=False, log=lambda s: None)
    truth = float(loss(_logits(fg), targets).total)
    for name, mask in candidates.items():
        worse = float(loss(_logits(mask), targets).total)
        assert truth < worse, f"ground truth {truth:.4f} does not beat {name} {worse:.4f}"


@pytest.mark.parametrize("autocast", [False, True])
def test_every_term_has_finite_nonzero_gradients(sheet_patch, autocast):
    _, targets = sheet_patch
    terms = {"dice": DiceLoss(), "focal": FocalLoss(alpha=0.25), "boundary": BoundaryLoss(),
             "cldice": ClDiceLoss(3), "connectivity": ConnectivityLoss()}
    for name, term in terms.items():
        x = torch.randn((1, 1, 48, 48, 48), generator=torch.Generator().manual_seed(3),
                        requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = x * 1.0  # a bf16-eligible op under autocast would still be fp32 here
            value = term(logits.to(torch.bfloat16) if autocast else logits, targets)
        assert value.batch.dtype == torch.float32
        value.batch.backward()
        assert torch.isfinite(x.grad).all(), name
        assert x.grad.abs().sum() > 0, name


def test_connectivity_punishes_holes_and_bridges(sheet_patch):
    label, targets = sheet_patch
    fg = label == 1
    term = ConnectivityLoss()
    truth = float(term(_logits(fg), targets).batch)
    holed = fg & ~(targets.skeleton[0, 0].numpy() == 1)  # drop the medial surface voxels
    bridged = fg | (targets.skeleton[0, 0].numpy() == 2)  # fill the gaps' medial surface
    assert float(term(_logits(holed), targets).batch) > truth + 0.3
    assert float(term(_logits(bridged), targets).batch) > truth + 0.3


def test_cldice_warns_when_iterations_are_too_few():
    label = torch.zeros((1, 1, 20, 20, 20), dtype=torch.uint8)
    label[:, :, 6:14] = 1  # a sheet 8 voxels thick: half-thickness 4
    targets = make_targets(label)
    with pytest.warns(UserWarning, match="too few for the sheet thickness"):
        ClDiceLoss(iterations=1)(torch.zeros(label.shape), targets)
    ClDiceLoss(iterations=5)(torch.zeros(label.shape), targets)  # no warning (errors are on)


def test_missing_derived_targets_say_how_to_make_them():
    targets = make_targets(t5([1, 0, 1, 0], torch.uint8))
    with pytest.raises(ValueError, match="vesuvius-derive"):
        BoundaryLoss()(t5([0.0] * 4), targets)
    with pytest.raises(ValueError, match="vesuvius-derive"):
        ConnectivityLoss()(t5([0.0] * 4), targets)
    assert all_terms().needs() == {"sdt", "skeleton"}
    assert CompoundLoss(LossWeights(boundary_weight=0, connectivity_weight=0)).needs() == set()


def test_make_targets_rejects_values_outside_spec():
    with pytest.raises(ValueError, match=r"label values \[7\]"):
        make_targets(t5([0, 7, 1], torch.uint8))


def test_build_loss_chooses_and_says(sheet_patch):
    label, _ = sheet_patch
    import dask.array as da

    index = build_index([VolumeSource("v", da.from_array(label, chunks=24))], 16, 8,
                        progress=False)
    said = []
    auto = build_loss(census=index.census(), log=said.append)
    w = index.class_weights()
    assert auto.terms["focal"].class_weights == (w["background"], w["foreground"])
    assert auto.terms["focal"].alpha == 0.5  # balanced once, not twice
    assert "class weights (auto" in said[0] and "focal alpha" in said[1]
    plain = build_loss(census=index.census(), use_class_weights=False, log=said.append)
    assert plain.terms["focal"].class_weights is None
    assert plain.terms["focal"].alpha == pytest.approx(index.focal_alpha())
    given = build_loss(use_class_weights=True, background_weight=1, foreground_weight=7,
                       focal_alpha=0.3, log=said.append)
    assert given.terms["focal"].class_weights == (1.0, 7.0) and given.terms["focal"].alpha == 0.3
    with pytest.raises(ValueError, match="needs the training volumes' census"):
        build_loss(log=said.append)
    with pytest.raises(ValueError, match="all loss weights are zero"):
        CompoundLoss(LossWeights(0, 0, 0, 0, 0))


def test_per_sample_losses_rank_patches(sheet_patch):
    label, targets = sheet_patch
    fg = torch.from_numpy(label == 1)[None, None]
    two = targets.map(lambda t: torch.cat([t, t]))
    logits = torch.cat([torch.where(fg, 6.0, -6.0), torch.zeros_like(fg, dtype=torch.float32)])
    out = all_terms()(logits, two)
    assert out.per_sample.shape == (2,) and out.per_sample[0] < out.per_sample[1]
    assert not out.per_sample.requires_grad


class _ToyTerm(torch.nn.Module):
    """A term that reads a derived target no built-in term knows: mean p where toy == 1."""

    def forward(self, logits, t):
        toy = t.require("toy", "toy").float()
        per_sample = (torch.sigmoid(logits) * toy).flatten(1).mean(1)
        return TermValue(per_sample.mean(), per_sample)


def test_a_new_term_with_a_new_derived_target_is_one_registry_line(monkeypatch, sheet_patch):
    label, targets = sheet_patch
    monkeypatch.setitem(LOSS_TERMS, "toy", LossTerm(lambda s: _ToyTerm(), needs=("toy",)))
    loss = CompoundLoss({"dice": 1.0, "toy": 2.0})
    assert loss.needs() == {"toy"} and list(loss.terms) == ["dice", "toy"]
    toy = torch.zeros_like(targets.fg, dtype=torch.uint8)
    toy[..., :4] = 1
    with_toy = make_targets(torch.from_numpy(label)[None, None], toy=toy)
    logits = torch.zeros_like(targets.fg)  # p = 0.5 everywhere
    out = loss(logits, with_toy)
    share = float(toy.float().mean())
    assert out.terms["toy"] == pytest.approx(0.5 * share)
    assert float(out.total) == pytest.approx(out.terms["dice"] + 2.0 * 0.5 * share, rel=1e-5)
    with pytest.raises(ValueError, match="needs the 'toy' target"):
        loss(logits, make_targets(torch.from_numpy(label)[None, None]))
    with pytest.raises(ValueError, match=r"unknown loss term\(s\) \['nope'\]"):
        CompoundLoss({"nope": 1.0})


def test_skeleton_recall_by_hand():
    from trainer.losses.skeleton_recall import SkeletonRecallLoss

    label = t5([0, 1, 1, 1, 2], torch.uint8)
    skeleton = t5([0, 0, 1, 0, 0], torch.uint8)
    logits = t5([0.0, 2.0, 0.0, -2.0, 9.0])
    # the tube: the ridge at x=2 dilated by one voxel and cut back to the surface, x = 1..3
    value = SkeletonRecallLoss()(logits, make_targets(label, skeleton=skeleton))
    hit = sig(2) + 0.5 + sig(-2)
    assert float(value.batch) == pytest.approx(1 - (hit + 1) / (3 + 1), rel=1e-6)
    assert float(value.per_sample[0]) == pytest.approx(float(value.batch), rel=1e-6)


def test_skeleton_recall_ranks_pinholes_below_whole_sheets_and_ignores_label_2(sheet_patch):
    from trainer.losses.skeleton_recall import SkeletonRecallLoss

    label, targets = sheet_patch
    fg = label == 1
    term = SkeletonRecallLoss()
    whole = float(term(_logits(fg), targets).batch)
    pinholed = fg.copy()
    for z, y, x in np.argwhere(fg)[:: max(fg.sum() // 40, 1)][:40]:  # 40 pinholes, 3^3 each
        pinholed[z - 1:z + 2, y - 1:y + 2, x - 1:x + 2] = False
    assert whole < 0.01 and float(term(_logits(pinholed), targets).batch) > whole + 0.05
    ignore = torch.from_numpy(label == 2)[None, None]
    noisy = torch.where(ignore, 50 * torch.randn(ignore.shape), _logits(fg))
    assert float(term(noisy, targets).batch) == pytest.approx(whole, abs=1e-7)


def _sheets(case: str) -> np.ndarray:
    """Hand-made sheets, 3 voxels thick, running along x (so every y-z cut is a cross-section)."""
    label = np.zeros((40, 40, 40), np.uint8)
    z, y = np.mgrid[:40, :40]
    def sheet(centre):  # noqa: E306
        return np.abs(z - centre) <= 1
    if case == "flat":
        cut = sheet(np.full_like(y, 19)) & (y >= 5) & (y < 35)
    elif case == "tilted":
        cut = sheet(np.round(10 + 0.5 * y)) & (y >= 5) & (y < 35)
    elif case == "touching":  # two sheets that merge into one along part of their length
        cut = (sheet(np.full_like(y, 14)) | sheet(np.where(y < 20, 17, 22))) & (y >= 5) & (y < 35)
    else:  # "torn": a flat sheet with a tear across it
        cut = sheet(np.full_like(y, 19)) & (y >= 5) & (y < 35) & ~((y >= 19) & (y < 21))
    label[:, :, 5:35] = cut[:, :, None]
    return label


@pytest.mark.parametrize(("case", "off"), [("flat", 0.10), ("tilted", 0.10),
                                           ("touching", 0.15), ("torn", 0.10)])
def test_medial_surface_agrees_with_scikit_image_skeletons_of_cross_sections(case, off):
    """scikit-image's 3-D skeletonize thins a plate to a curve or a point (topology, not
    shape), so the reference is its 2-D skeleton of every cross-section of the sheets: the
    medial surface cut by a plane across it is that plane's medial axis. Each must lie on
    the other, within the one voxel of tube the loss adds. Where two sheets merge, ridges of
    the discrete distance transform widen into plateaus: 14 % of our voxels lie off the thin
    2-D reference there."""
    from skimage.morphology import skeletonize

    label = _sheets(case)
    ours = medial_skeleton(label, clip=10.0) == 1
    ref = np.zeros_like(ours)
    for x in range(label.shape[2]):
        ref[:, :, x] = skeletonize(label[:, :, x] == 1)
    cube = np.ones((3, 3, 3), bool)
    # x is the direction along the sheets: compare cross-section by cross-section
    near = lambda a: ndimage.binary_dilation(a, cube[:, :, 1:2])  # noqa: E731
    assert ref.sum() > 100 and ours.sum() > 100
    assert (ref & ~near(ours)).sum() <= 0.05 * ref.sum(), "a reference voxel off our surface"
    assert (ours & ~near(ref)).sum() <= off * ours.sum(), "our surface off the reference"
    assert not (ours & (label != 1)).any()
