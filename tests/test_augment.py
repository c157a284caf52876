"""Intensity augmentation: what it changes, what it leaves alone, reproducible from a seed."""

import numpy as np
import torch
import torchio as tio

from trainer.augment import RandomBiasContrast, build_augmentation


def _subject(seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 16, 16, 16, generator=g)
    label = (torch.rand(1, 16, 16, 16, generator=g) < 0.2).to(torch.uint8)
    return tio.Subject(image=tio.ScalarImage(tensor=image), label=tio.LabelMap(tensor=label))


def test_bias_contrast_is_smooth_keeps_labels_and_order_locally():
    subject = _subject()
    torch.manual_seed(1)
    out = RandomBiasContrast(log_contrast=0.4, bias=0.3, include=["image"])(subject)
    x, y = subject["image"].data, out["image"].data
    assert torch.equal(out["label"].data, subject["label"].data)
    assert not torch.allclose(x, y)
    # a smooth field and a contrast: the output is an increasing function of the input in any
    # small neighbourhood (rank correlation within a 4^3 block stays ~1)
    a, b = x[0, :4, :4, :4].flatten().numpy(), y[0, :4, :4, :4].flatten().numpy()
    assert np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1] > 0.98
    # but not globally one gain: the bias field varies across the patch
    ratio = (y - y.min()) / (x - x.min() + 1e-3)
    assert ratio[0, :4, :4, :4].median() != ratio[0, -4:, -4:, -4:].median()


def test_augmentation_is_reproducible_from_the_seed_and_off_at_zero():
    assert build_augmentation(0) is None
    aug = build_augmentation(1.0)
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        outs.append(aug(_subject())["image"].data)
    torch.manual_seed(6)
    other = aug(_subject())["image"].data
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], other)


def test_geometry_never_resamples_labels_so_thin_sheets_keep_their_topology():
    """Rotating a 2-voxel sheet by an arbitrary angle punches pinholes through its label; the
    augmentation only flips and permutes axes, so every label keeps its voxels and its loops."""
    from vesuvius_data.metrics.topology import betti_counts
    from vesuvius_data.synthetic import make_volume

    image, label = make_volume((48, 48, 48), seed=7, preset="hard")
    subject = tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(image[None]).float()),
                          label=tio.LabelMap(tensor=torch.from_numpy(label[None])))

    def loops(lab):
        return betti_counts(lab == 1, lab == 1).pred

    before = loops(label)
    aug = build_augmentation(1.0)
    for seed in range(20):
        torch.manual_seed(seed)
        out = aug(subject)["label"].data[0].numpy()
        assert np.array_equal(np.bincount(out.ravel(), minlength=3),
                              np.bincount(label.ravel(), minlength=3))
        assert loops(out) == before


def test_gaussian_blur_equals_scipy():
    from scipy.ndimage import gaussian_filter

    from trainer.augment import gaussian_blur

    x = torch.randn(1, 12, 14, 16, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    sigmas = [0.7, 0.0, 1.3]
    ref = gaussian_filter(x[0].numpy(), sigmas, mode="nearest", truncate=3.0)
    # scipy's radius is int(3 sigma + 0.5) as well; a sigma of 0 leaves its axis alone
    np.testing.assert_allclose(gaussian_blur(x, sigmas)[0].numpy(), ref, atol=1e-12)


def test_device_intensity_is_seeded_per_sample_and_leaves_geometry_to_the_workers():
    from trainer.augment import DeviceIntensity

    aug = DeviceIntensity(1.0)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 1, 16, 16, 16, generator=g)
    seeds = torch.tensor([11, 12, 13, 14])
    out = aug(x, seeds)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(aug(x, seeds), out)  # the same seeds, the same draws
    # a sample's augmentation depends on its own seed only, not on its batch-mates
    torch.testing.assert_close(aug(x[2:3], seeds[2:3]), out[2:3])
    changed = [not torch.equal(aug(x[:1], torch.tensor([s]))[0], x[0]) for s in range(200)]
    # P(no transform fires) = 0.5 * 0.8 * 0.7 = 0.28 at strength 1
    assert 0.18 < 1 - np.mean(changed) < 0.38
    # intensity only: the per-voxel order within a small block survives (no geometry moved)
    a, b = x[0, 0, :3, :3, :3].flatten(), out[0, 0, :3, :3, :3].flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.5


def test_geometry_only_augmentation_for_stored_dtype_workers():
    aug = build_augmentation(1.0, intensity=False)
    names = [type(t).__name__ for t in aug.transforms]
    assert names == ["RandomFlip", "RandomAxisPermutation"]
