"""3D U-Net (plain or residual encoder), InstanceNorm + LeakyReLU, one logit channel."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["UNet3D", "MODELS", "build_model", "count_parameters"]


class ConvBlock(nn.Module):
    """Two 3x3x3 convolutions, each InstanceNorm + LeakyReLU; optionally residual."""

    def __init__(self, cin: int, cout: int, residual: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout, affine=True),
        )
        self.skip = None
        if residual:
            self.skip = nn.Identity() if cin == cout else nn.Conv3d(cin, cout, 1, bias=False)
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.skip is not None:
            y = y + self.skip(x)
        return self.act(y)


class UNet3D(nn.Module):
    """U-Net with ``depth`` resolutions, filters doubling from ``initial_filters`` (cap 320).

    ``forward`` returns logits (B, 1, D, H, W); with ``deep_supervision`` in training mode it
    returns a list, full resolution first, then the coarser decoder outputs (upsampled by the
    loss caller). The output bias starts at logit(prior) so the first predictions already have
    the dataset's foreground share instead of 50 %.
    """

    def __init__(self, initial_filters: int = 32, depth: int = 4, residual: bool = False,
                 deep_supervision: bool = False, in_channels: int = 1,
                 foreground_prior: float = 0.5) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        widths = [min(initial_filters * 2**i, 320) for i in range(depth)]
        self.encoders = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.encoders.append(ConvBlock(cin, w, residual))
            cin = w
        self.down = nn.MaxPool3d(2)
        self.ups = nn.ModuleList(nn.ConvTranspose3d(widths[i + 1], widths[i], 2, stride=2)
                                 for i in reversed(range(depth - 1)))
        self.decoders = nn.ModuleList(ConvBlock(2 * widths[i], widths[i], residual)
                                      for i in reversed(range(depth - 1)))
        # heads[k] reads the decoder output k levels above full resolution
        self.heads = nn.ModuleList(nn.Conv3d(widths[i], 1, 1)
                                   for i in (range(depth - 1) if deep_supervision else [0]))
        self.deep_supervision = deep_supervision
        p = min(max(foreground_prior, 1e-4), 1 - 1e-4)
        for head in self.heads:
            nn.init.constant_(head.bias, math.log(p / (1 - p)))
        self.min_size = 2 ** (depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if any(s % self.min_size for s in x.shape[2:]):
            raise ValueError(f"input spatial shape {tuple(x.shape[2:])} must be divisible by "
                             f"{self.min_size} (2^(depth-1))")
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else self.down(x))
            skips.append(x)
        outputs = []
        x = skips.pop()
        for up, dec in zip(self.ups, self.decoders, strict=True):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
            outputs.append(x)
        if self.deep_supervision and self.training:
            return [head(o) for head, o in zip(self.heads, reversed(outputs), strict=True)]
        return self.heads[0](outputs[-1])


MODELS = {"unet": False, "resunet": True}  # name -> residual encoder/decoder blocks


def build_model(name: str, initial_filters: int, depth: int, deep_supervision: bool = False,
                foreground_prior: float = 0.5) -> UNet3D:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    return UNet3D(initial_filters, depth, MODELS[name], deep_supervision,
                  foreground_prior=foreground_prior)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
