"""Augmentation from one strength knob, as torchio transforms run in the loader's workers.

Geometry only by the cube's exact symmetries (flips, axis permutations), and intensity:
contrast, a smooth bias field, gamma, partial-volume blur and noise, so that a model trained on
one scanner's look (or one synthetic preset) does not take contrast or brightness as the
definition of papyrus.

No rotation by arbitrary angles and no scaling: resampling a 2-voxel sheet's label punches holes
through it (nearest neighbour: 15-68 loops in a 48^3 hard-preset patch that had 0-6; linear
interpolation thresholded at 0.5 still 7-15), so the model would be taught that sheets have
pinholes, the very error TopoScore punishes most.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchio as tio
from torchio.transforms.augmentation.random_transform import RandomTransform


class RandomAxisPermutation(RandomTransform, tio.SpatialTransform):
    """Permute the three spatial axes (with flips: all 48 rotations/reflections of a cube)."""

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        perm = torch.randperm(3).tolist()
        if any(s != subject.spatial_shape[0] for s in subject.spatial_shape):
            return subject  # only cubic patches keep their shape under permutation
        for image in self.get_images(subject):
            image.set_data(image.data.permute(0, *(p + 1 for p in perm)).contiguous())
        return subject


class RandomGammaNoise(RandomTransform, tio.IntensityTransform):
    """Gamma on the intensity range (works on z-scored data), then Gaussian noise."""

    def __init__(self, log_gamma: float, noise_std: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.log_gamma, self.noise_std = log_gamma, noise_std

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        gamma = float(torch.empty(1).uniform_(-self.log_gamma, self.log_gamma).exp())
        std = float(torch.empty(1).uniform_(0, self.noise_std))
        for image in self.get_images(subject):
            x = image.data.float()
            lo, hi = x.min(), x.max()
            span = (hi - lo).clamp(min=1e-6)
            x = ((x - lo) / span) ** gamma * span + lo
            image.set_data(x + std * torch.randn_like(x))
        return subject


class RandomBiasContrast(RandomTransform, tio.IntensityTransform):
    """Contrast around the mean, then a smooth multiplicative bias field, on any intensities
    (z-scored data is shifted to be positive first, as a field multiplies raw densities)."""

    def __init__(self, log_contrast: float, bias: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.log_contrast, self.bias = log_contrast, bias

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        contrast = float(torch.empty(1).uniform_(-self.log_contrast, self.log_contrast).exp())
        coarse = torch.empty(1, 1, 3, 3, 3).uniform_(-self.bias, self.bias)
        for image in self.get_images(subject):
            x = image.data.float()
            mean = x.mean()
            x = (x - mean) * contrast + mean
            field = 1.0 + F.interpolate(coarse, size=x.shape[1:], mode="trilinear",
                                        align_corners=True)[0]
            lo = x.min()
            image.set_data((x - lo) * field + lo)
        return subject


def build_augmentation(strength: float) -> tio.Compose | None:
    """Flips and axis permutations (the 48 symmetries of a cube); contrast, bias field, blur,
    gamma and noise.

    ``strength`` scales every magnitude and probability; 0 turns augmentation off.
    """
    if strength <= 0:
        return None
    s = float(strength)
    return tio.Compose([
        tio.RandomFlip(axes=(0, 1, 2), flip_probability=min(0.5, 0.5 * s)),
        RandomAxisPermutation(p=min(1.0, 0.5 * s)),
        RandomBiasContrast(log_contrast=0.4 * s, bias=0.3 * s, p=min(1.0, 0.5 * s),
                           include=["image"]),
        tio.RandomBlur(std=(0.0, 0.8 * s), p=min(1.0, 0.2 * s), include=["image"]),
        RandomGammaNoise(log_gamma=0.3 * s, noise_std=0.1 * s, p=min(1.0, 0.3 * s),
                         include=["image"]),
    ])
