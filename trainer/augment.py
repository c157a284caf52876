"""Augmentation from one strength knob: torchio transforms in the loader's workers, or, when
the loader hands over stored-dtype patches to be normalised on the GPU, geometry in the
workers and the intensity transforms on the device (``DeviceIntensity``, one batch at a time,
each sample seeded by its item as in the workers).

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

from dataclasses import dataclass

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
            image.set_data(gamma_noise(x, gamma, std * torch.randn_like(x)))
        return subject


def gamma_noise(x: torch.Tensor, gamma: float, noise: torch.Tensor) -> torch.Tensor:
    """Gamma on the sample's intensity range, then additive ``noise``."""
    lo, hi = x.min(), x.max()
    span = (hi - lo).clamp(min=1e-6)
    return ((x - lo) / span) ** gamma * span + lo + noise


def bias_contrast(x: torch.Tensor, contrast: float, coarse: torch.Tensor) -> torch.Tensor:
    """Contrast around the sample's mean, then the multiplicative field that ``coarse``
    (1, 1, 3, 3, 3) interpolates to the sample's shape (C, D, H, W)."""
    mean = x.mean()
    x = (x - mean) * contrast + mean
    field = 1.0 + F.interpolate(coarse.to(x.device, x.dtype), size=x.shape[1:],
                                mode="trilinear", align_corners=True)[0]
    lo = x.min()
    return (x - lo) * field + lo


def gaussian_blur(x: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """Separable Gaussian blur of a (C, D, H, W) sample, one sigma per axis (voxels),
    kernels truncated at 3 sigma, edges replicated."""
    for axis, sigma in enumerate(sigmas):
        radius = int(3 * sigma + 0.5)
        if radius < 1:
            continue
        t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (t / sigma) ** 2)
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis):2 * (2 - axis) + 2] = [radius, radius]
        y = F.pad(x[:, None], pad, mode="replicate")
        x = F.conv3d(y, (kernel / kernel.sum()).view(shape))[:, 0]
    return x


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
            image.set_data(bias_contrast(image.data.float(), contrast, coarse))
        return subject


def build_augmentation(strength: float, intensity: bool = True) -> tio.Compose | None:
    """Flips and axis permutations (the 48 symmetries of a cube); with ``intensity``,
    contrast, bias field, blur, gamma and noise (``DeviceIntensity`` runs those on the GPU
    instead).

    ``strength`` scales every magnitude and probability; 0 turns augmentation off.
    """
    if strength <= 0:
        return None
    s = float(strength)
    geometry = [tio.RandomFlip(axes=(0, 1, 2), flip_probability=min(0.5, 0.5 * s)),
                RandomAxisPermutation(p=min(1.0, 0.5 * s))]
    if not intensity:
        return tio.Compose(geometry)
    m = IntensityMagnitudes.at(s)
    return tio.Compose([
        *geometry,
        RandomBiasContrast(log_contrast=m.log_contrast, bias=m.bias, p=m.p_bias,
                           include=["image"]),
        tio.RandomBlur(std=(0.0, m.blur), p=m.p_blur, include=["image"]),
        RandomGammaNoise(log_gamma=m.log_gamma, noise_std=m.noise_std, p=m.p_gamma,
                         include=["image"]),
    ])


@dataclass(frozen=True)
class IntensityMagnitudes:
    """The intensity transforms' ranges and probabilities at one strength: one place for the
    workers' torchio transforms and ``DeviceIntensity`` alike."""

    log_contrast: float
    bias: float
    p_bias: float
    blur: float  # the largest Gaussian sigma, voxels
    p_blur: float
    log_gamma: float
    noise_std: float
    p_gamma: float

    @classmethod
    def at(cls, s: float) -> IntensityMagnitudes:
        return cls(log_contrast=0.4 * s, bias=0.3 * s, p_bias=min(1.0, 0.5 * s), blur=0.8 * s,
                   p_blur=min(1.0, 0.2 * s), log_gamma=0.3 * s, noise_std=0.1 * s,
                   p_gamma=min(1.0, 0.3 * s))


class DeviceIntensity:
    """``build_augmentation``'s intensity transforms, same magnitudes and probabilities, on a
    normalised batch on its device; each sample's draws come from its item's seed, so a run
    (and its resume) sees the same augmentation with any number of workers."""

    def __init__(self, strength: float) -> None:
        self.m = IntensityMagnitudes.at(float(strength))

    def __call__(self, x: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._one(sample, int(seed)) for sample, seed in zip(
            x, seeds.tolist(), strict=True)])

    def _one(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        m = self.m
        params = torch.Generator().manual_seed(seed ^ 0x5EED)  # not the workers' draws

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return torch.empty(shape or (1,)).uniform_(lo, hi, generator=params)

        if float(uniform(0, 1)) < m.p_bias:
            x = bias_contrast(x, float(uniform(-m.log_contrast, m.log_contrast).exp()),
                              uniform(-m.bias, m.bias, 1, 1, 3, 3, 3))
        if float(uniform(0, 1)) < m.p_blur:
            x = gaussian_blur(x, uniform(0.0, m.blur, 3).tolist())
        if float(uniform(0, 1)) < m.p_gamma:
            gamma = float(uniform(-m.log_gamma, m.log_gamma).exp())
            std = float(uniform(0, m.noise_std))
            noise = torch.Generator(device=x.device).manual_seed(seed ^ 0x401E)
            x = gamma_noise(x, gamma, std * torch.randn(x.shape, generator=noise,
                                                         device=x.device, dtype=x.dtype))
        return x
