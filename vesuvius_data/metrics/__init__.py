"""Pieces of the competition metric (issue 7). VOI is here; SurfaceDice and TopoScore are not
yet, so there is no ``score_volume`` until they are."""

from .voi import VoiResult, binarize_pair, variation_of_information

__all__ = ["VoiResult", "binarize_pair", "variation_of_information"]
