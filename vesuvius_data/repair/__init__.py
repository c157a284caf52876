"""Topology repair: turn probabilities into sheets without pinholes, specks or merges.

The competition's TopoScore counts every extra 6-connected component, every tunnel through a
sheet (a dimension-1 bar) and every enclosed cavity, while SurfaceDice at tolerance 2 barely
notices them. A model that misses a few surface voxels leaves pinholes, and each pinhole is a
loop. 3-D hole filling does not close a pinhole (it is a tunnel, not a cavity), so repair works
per sheet. The steps, each usable alone and all deterministic:

- ``smooth_along_sheets``: average the probabilities over a disc in each voxel's sheet plane
  (orientation from the structure tensor), so pinholes and a wandering sheet edge average out
  while neighbouring sheets stay apart. A filter on probabilities, like a blur: it runs before
  the threshold, and on a mask it can still move a sheet's rim.
- ``hysteresis``: keep weak voxels (p > weak) only in components that hold a strong one
  (p > strong): sheets stay whole where the model hesitates, noise without a confident seed goes.
- ``split_bridges``: cut sheets that the threshold merged: a watershed of the probabilities
  from confident seeds (p > seed) removes the voxels where two floods meet, so two sheets joined
  by a weak bridge come apart while a sheet with one confident core stays whole.
- ``remove_dust``: drop components under a size, 6-connected like TopoScore counts them (a speck
  touching a sheet only at an edge or corner is its own component there) or 26-connected.
- ``plug_pinholes``: a morphological closing proposes voxels; a small group of them is kept only
  when it touches one sheet and, counted per scorer octant, removes a loop or a component and
  adds neither (Euler gain and a union-find over the pieces), so dents and gaps between sheets
  stay as they are.
- ``patch_sheet_holes``: label sheets, project each onto the axis where it is thinnest, find
  holes of its projected mask (not touching its border) up to ``max_area`` pixels, interpolate
  the sheet's height across each hole and paste the sheet's thickness there. A patch is rejected
  when it would come within one voxel of another sheet (no merges) or when it does not lower the
  number of loops around it (Betti numbers from the metric's own kernels).
- ``fill_cavities``: fill enclosed background pockets up to a size.

``RepairConfig`` holds all options and ``repair(prob, config)`` applies them in that order; it
round-trips through ``dataclasses.asdict`` so tools print and reuse it as flags.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from ._common import MAX_ROUNDS
from .patch import patch_sheet_holes
from .plug import plug_pinholes
from .smooth import smooth_along_sheets
from .split import split_bridges

__all__ = ["RepairConfig", "repair", "add_repair_arguments", "repair_config_from_args",
           "smooth_along_sheets", "hysteresis", "split_bridges", "remove_dust", "plug_pinholes",
           "patch_sheet_holes", "fill_cavities"]


@dataclass(frozen=True)
class RepairConfig:
    """Post-processing of a probability volume, applied in field order by ``repair``."""

    sheet_sigma: float = 0.0  # smooth probabilities in each sheet's plane (voxels); 0 = off
    threshold: float = 0.5  # foreground is p > threshold (the strong threshold with hysteresis)
    weak_threshold: float | None = None  # hysteresis: keep p > weak connected to p > threshold
    split_seed: float | None = None  # cut bridges: watershed from p > split_seed cores; None = off
    min_component: int = 0  # drop components smaller than this (voxels); 0 = off
    dust_connectivity: int = 26  # 6 counts like TopoScore, 26 like VOI
    plug: bool = False  # per-sheet closing of one- and two-voxel pinholes
    patch_area: int = 0  # per-sheet hole patching up to this many projected pixels; 0 = off
    max_cavity: int = 0  # fill enclosed cavities of at most this many voxels; 0 = off
    octants: bool = True  # count topology per scorer octant (as TopoScore does)

    def __post_init__(self) -> None:
        if self.weak_threshold is not None and not self.weak_threshold <= self.threshold:
            raise ValueError(f"weak_threshold {self.weak_threshold} must not exceed threshold "
                             f"{self.threshold}")
        if self.split_seed is not None and not self.threshold < self.split_seed < 1:
            raise ValueError(f"split_seed {self.split_seed} must lie between threshold "
                             f"{self.threshold} and 1")
        if self.dust_connectivity not in (6, 26):
            raise ValueError(f"dust_connectivity must be 6 or 26, got {self.dust_connectivity}")
        if not self.sheet_sigma >= 0:
            raise ValueError(f"sheet_sigma must be >= 0, got {self.sheet_sigma}")
        if min(self.min_component, self.patch_area, self.max_cavity) < 0:
            raise ValueError("min_component, patch_area and max_cavity must be >= 0")

    def to_flags(self) -> str:
        """The ``vesuvius-predict`` flags that reproduce this config."""
        flags = [f"--sheet-sigma {self.sheet_sigma}"] if self.sheet_sigma else []
        flags.append(f"--threshold {self.threshold}")
        if self.weak_threshold is not None:
            flags.append(f"--weak-threshold {self.weak_threshold}")
        if self.split_seed is not None:
            flags.append(f"--split-seed {self.split_seed}")
        if self.min_component:
            flags.append(f"--min-component {self.min_component} --dust-connectivity "
                         f"{self.dust_connectivity}")
        flags += ["--plug"] if self.plug else []
        flags += [f"--patch-area {self.patch_area}"] if self.patch_area else []
        flags += [f"--max-cavity {self.max_cavity}"] if self.max_cavity else []
        return " ".join(flags)


def add_repair_arguments(parser: argparse.ArgumentParser, only_given: bool = False) -> None:
    """The repair flags shared by the tools (``repair_config_from_args`` reads them back).
    ``only_given``: a flag the user did not pass leaves no attribute, so that a stored config
    supplies it (``repair_config_from_args(args, base)``)."""
    g = parser.add_argument_group("post-processing and topology repair (vesuvius_data.repair)")
    actions = [
        g.add_argument("--sheet-sigma", type=float, default=0.0,
                       help="smooth probabilities in each sheet's plane first (Gaussian, voxels)"),
        g.add_argument("--threshold", type=float, default=0.5, help="foreground is p > T"),
        g.add_argument("--weak-threshold", type=float, default=None,
                       help="hysteresis: also keep p > W where connected to p > T"),
        g.add_argument("--split-seed", type=float, default=None,
                       help="cut bridges between sheets: watershed from p > S cores"),
        g.add_argument("--min-component", type=int, default=0,
                       help="drop components smaller than N voxels"),
        g.add_argument("--dust-connectivity", type=int, choices=(6, 26), default=26,
                       help="6 counts components as TopoScore does"),
        g.add_argument("--plug", action="store_true", help="close 1-2 voxel pinholes per sheet"),
        g.add_argument("--patch-area", type=int, default=0,
                       help="patch sheet holes up to N projected pixels (guarded)"),
        g.add_argument("--max-cavity", "--max-hole", dest="max_cavity", type=int, default=0,
                       help="fill enclosed cavities of at most N voxels")]
    if only_given:
        for action in actions:
            action.default = argparse.SUPPRESS


def repair_config_from_args(args: argparse.Namespace, base: RepairConfig | None = None
                            ) -> RepairConfig:
    """The ``RepairConfig`` of the flags ``add_repair_arguments`` added (each flag's dest is
    its field's name): ``base`` (default ``RepairConfig()``) with every field ``args`` has."""
    return dataclasses.replace(base or RepairConfig(), **{
        f.name: getattr(args, f.name) for f in dataclasses.fields(RepairConfig)
        if hasattr(args, f.name)})


def repair(prob: np.ndarray, config: RepairConfig | None = None) -> np.ndarray:
    """uint8 mask from probabilities (or a mask) by the steps ``config`` turns on."""
    c = config or RepairConfig()
    prob = np.asarray(prob)
    if prob.ndim != 3:
        raise ValueError(f"repair needs a 3-D volume, got shape {prob.shape}")
    if c.sheet_sigma:
        prob = smooth_along_sheets(prob, c.sheet_sigma)
    if c.weak_threshold is not None:
        mask = hysteresis(prob, c.threshold, c.weak_threshold)
    else:
        mask = prob > c.threshold
    if c.split_seed is not None:
        mask = split_bridges(prob, mask, c.split_seed)
    if c.min_component:
        mask = remove_dust(mask, c.min_component, c.dust_connectivity)
    # the filling steps only add voxels, and one can open work for another (a patch leaves a
    # pinhole to plug): run them to a fixed point so that repair(repair(x)) == repair(x)
    for _ in range(MAX_ROUNDS):
        before = int(mask.sum())
        if c.plug:
            mask = plug_pinholes(mask, c.octants)
        if c.patch_area:
            mask = patch_sheet_holes(mask, c.patch_area, octants=c.octants)
        if c.max_cavity:
            mask = fill_cavities(mask, c.max_cavity)
        if int(mask.sum()) == before:
            break
    return mask.astype(np.uint8)


def hysteresis(prob: np.ndarray, strong: float, weak: float) -> np.ndarray:
    """``prob > weak`` where its 26-connected component holds a voxel with ``prob > strong``."""
    weak_mask = prob > weak
    if not weak_mask.any():
        return weak_mask
    labels = cc3d.connected_components(weak_mask, connectivity=26)
    seeded = np.zeros(int(labels.max()) + 1, bool)
    seeded[labels[prob > strong]] = True
    seeded[0] = False
    return seeded[labels]


def remove_dust(mask: np.ndarray, min_size: int, connectivity: int = 26) -> np.ndarray:
    """``mask`` without components of fewer than ``min_size`` voxels."""
    mask = np.asarray(mask, bool)
    if min_size <= 0 or not mask.any():
        return mask
    return cc3d.dust(mask.copy(), threshold=min_size, connectivity=connectivity)


def fill_cavities(mask: np.ndarray, max_size: int) -> np.ndarray:
    """``mask`` with enclosed background pockets of at most ``max_size`` voxels filled."""
    mask = np.asarray(mask, bool)
    if max_size <= 0 or not mask.any():
        return mask
    holes = ndimage.binary_fill_holes(mask) & ~mask
    lab, n = ndimage.label(holes)
    if not n:
        return mask
    small = np.bincount(lab.ravel(), minlength=n + 1) <= max_size
    small[0] = False
    return mask | small[lab]
