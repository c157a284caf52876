"""How a synthetic scroll volume looks: presets, domain randomisation, out-of-family looks.

A *preset* (``PRESETS``) says how hard a volume of ``synthetic.make_volume`` is:

- ``easy`` (the default): sheets 2-4 voxels thick, 9-16 voxels apart, clear contrast.
- ``hard``: what real CT looks like where models fail: 2-voxel sheets 4-8 voxels apart that
  sometimes touch, low contrast, stronger noise and partial-volume blur, a smooth 3-D bias field
  and bright debris between the sheets (labelled background where it lies in the band); every
  sheet inside the annotated band is labelled, as annotators trace all surfaces of a region.
- ``random``: every volume draws its own look from ``RANDOM_RANGES`` (sheet thickness 1.5-4
  voxels, spacing from touching to well apart, contrast, noise level and grain, blur, bias
  field, debris, tears, the scanner's gain and offset, annotated region or not): domain
  randomisation, deterministic from the seed like the rest.

``OUT_OF_FAMILY`` holds looks outside all of these, for a test set nothing is trained on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Preset", "PRESETS", "PRESET_CYCLES", "RANDOM_RANGES", "OUT_OF_FAMILY",
           "random_preset", "get_preset", "preset_cycle"]


@dataclass(frozen=True)
class Preset:
    """How a synthetic volume looks; every range is sampled uniformly per volume (or sheet)."""

    half_thickness: tuple[float, float] = (1.0, 2.0)  # sheet = |n - h| <= half: 2-4 voxels
    spacing: tuple[float, float] = (9.0, 16.0)  # sheet centre to next sheet centre
    own_wave: tuple[float, float] = (0.5, 2.0)  # per-sheet wave amplitude (makes sheets touch)
    papyrus: tuple[float, float] = (150.0, 185.0)  # density of papyrus
    gap: tuple[float, float] = (60.0, 85.0)  # density between sheets
    blur: tuple[float, float] = (0.7, 1.2)  # Gaussian sigma (partial volume)
    noise: tuple[float, float] = (8.0, 16.0)  # noise standard deviation
    drift: float = 0.12  # in-plane intensity drift (fraction)
    bias_field: float = 0.0  # smooth 3-D multiplicative field, +- this fraction
    debris_per_64cube: float = 0.0  # bright specks off the sheets, per 64^3 voxels
    debris_density: tuple[float, float] = (190.0, 240.0)
    # labels: False = only the chosen sheets are surface (others in the band are unlabeled);
    # True = the band around the chosen sheets is an annotated region where every sheet is
    # surface, as when annotators trace all surfaces of a region
    annotate_region: bool = False
    seed_share: float = 1.0  # scales the surface share the chosen sheets aim at
    tear_rate: float = 0.4  # share of sheets with tears through them
    noise_grain: float = 0.0  # Gaussian sigma of the noise field: its texture (0: white)
    intensity_scale: float = 1.0  # the scanner's gain ...
    intensity_offset: float = 0.0  # ... and offset, applied to the density before rounding


#: presets by name (``make_volume(..., preset=NAME)``, ``vesuvius-synth --preset NAME``)
PRESETS: dict[str, Preset] = {
    "easy": Preset(),
    "hard": Preset(half_thickness=(0.95, 1.05), spacing=(6.0, 10.0), own_wave=(0.5, 2.5),
                   papyrus=(125.0, 145.0), gap=(78.0, 95.0), blur=(0.9, 1.3),
                   noise=(10.0, 16.0), drift=0.0, bias_field=0.25, debris_per_64cube=16.0,
                   debris_density=(210.0, 255.0), annotate_region=True, seed_share=0.3),
}


#: named cycles of presets for multi-volume datasets
PRESET_CYCLES: dict[str, tuple[str, ...]] = {"mixed": ("easy", "hard")}

#: ``preset="random"``: each volume draws its look from these ranges (domain randomisation,
#: so a model cannot learn one scanner's contrast as the definition of papyrus). Per volume:
#: ``(lo, hi)`` draws one value uniformly; the ranged fields of ``Preset`` draw a lower bound
#: and a width, and each sheet then draws within them as in the fixed presets.
RANDOM_RANGES: dict[str, tuple[float, float]] = {
    "half_thickness": (0.75, 2.0),  # sheets 1.5-4 voxels thick
    "half_thickness_width": (0.0, 0.4),
    "spacing": (5.0, 14.0),  # centre to centre: from touching to well apart
    "spacing_width": (1.0, 6.0),
    "own_wave": (1.5, 3.0),  # the upper bound; more wave, more touching sheets
    "papyrus": (115.0, 195.0),
    "contrast": (25.0, 100.0),  # papyrus minus gap density
    "blur": (0.6, 1.4),
    "noise": (5.0, 16.0),
    "noise_width": (2.0, 6.0),
    "noise_grain": (0.0, 1.2),
    "drift": (0.0, 0.15),
    "bias_field": (0.0, 0.3),
    "debris_per_64cube": (0.0, 20.0),
    "tear_rate": (0.2, 0.6),
    "intensity_scale": (0.7, 1.3),
    "intensity_offset": (-30.0, 30.0),
    "annotate_region": (0.0, 1.0),  # the chance that the band is an annotated region
}


#: looks that lie outside every training preset's ranges (``hard``, ``random``): a test set
#: that nothing is trained, tuned or chosen on (``bench_quality``'s "out of family" table).
#: Each differs from ``hard`` in one way a new scan could: 1-voxel or 5-voxel sheets, stronger
#: blur, coarse-grained noise, another scanner's gain and offset.
OUT_OF_FAMILY: dict[str, Preset] = {
    name: dataclasses.replace(PRESETS["hard"], **change) for name, change in {
        "thin sheets": {"half_thickness": (0.45, 0.55)},  # 1 voxel; training: >= 1.5
        "thick sheets": {"half_thickness": (2.3, 2.6), "spacing": (9.0, 13.0)},  # 5-6 voxels
        "strong blur": {"blur": (1.9, 2.3)},  # training: <= 1.7
        "coarse noise": {"noise": (18.0, 24.0), "noise_grain": 1.8},  # training: <= 22, 1.2
        "other scanner": {"intensity_scale": 0.55, "intensity_offset": 70.0},  # gain <= 1.3
    }.items()}


def random_preset(rng: np.random.Generator) -> Preset:
    """One volume's look drawn from ``RANDOM_RANGES``."""
    r = {k: float(rng.uniform(*v)) for k, v in RANDOM_RANGES.items()}
    half = min(r["half_thickness"], 2.0 - r["half_thickness_width"])
    papyrus = r["papyrus"]
    region = bool(rng.random() < r["annotate_region"])
    return Preset(
        half_thickness=(half, half + r["half_thickness_width"]),
        spacing=(r["spacing"], r["spacing"] + r["spacing_width"]),
        own_wave=(0.5, r["own_wave"]), papyrus=(papyrus - 5.0, papyrus + 5.0),
        gap=(papyrus - r["contrast"] - 5.0, papyrus - r["contrast"] + 5.0),
        blur=(r["blur"], r["blur"] + 0.3), noise=(r["noise"], r["noise"] + r["noise_width"]),
        drift=r["drift"], bias_field=r["bias_field"],
        debris_per_64cube=r["debris_per_64cube"], annotate_region=region,
        seed_share=float(rng.uniform(0.3, 0.6)) if region else 1.0,
        tear_rate=r["tear_rate"], noise_grain=r["noise_grain"],
        intensity_scale=r["intensity_scale"], intensity_offset=r["intensity_offset"])


def preset_cycle(preset: str | Preset | Sequence[str | Preset]) -> list[str | Preset]:
    if isinstance(preset, str) and preset in PRESET_CYCLES:
        return list(PRESET_CYCLES[preset])
    if isinstance(preset, (str, Preset)):
        return [preset]
    cycle = list(preset)
    if not cycle:
        raise ValueError("preset sequence is empty")
    return cycle


def get_preset(preset: str | Preset, rng: np.random.Generator | None = None) -> Preset:
    """A preset by name (an unknown name lists the valid ones) or as given; ``"random"``
    draws one from ``rng``."""
    if isinstance(preset, Preset):
        return preset
    if preset == "random":
        return random_preset(rng if rng is not None else np.random.default_rng())
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}, random")
    return PRESETS[preset]
