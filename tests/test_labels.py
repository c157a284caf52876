import numpy as np
import pytest

from vesuvius_data import LabelCensus, LabelSpec, count_labels


def test_spec_rejects_duplicate_and_out_of_range_values():
    with pytest.raises(ValueError, match="distinct"):
        LabelSpec(background=0, foreground=0, ignore=2)
    with pytest.raises(ValueError, match="uint8"):
        LabelSpec(ignore=300)
    assert LabelSpec.from_dict(LabelSpec(3, 4, 5).to_dict()) == LabelSpec(3, 4, 5)


def test_census_counts_and_labeled_share():
    label = np.array([0] * 7 + [1] * 1 + [2] * 12, np.uint8).reshape(1, 4, 5)
    c = count_labels(label, LabelSpec())
    assert (c.background, c.foreground, c.ignore) == (7, 1, 12)
    assert c.fractions()["foreground"] == pytest.approx(1 / 20)
    # the share that class weights need: over labeled voxels only
    assert c.foreground_share_of_labeled == pytest.approx(1 / 8)
    assert (c + c).to_dict() == {"background": 14, "foreground": 2, "ignore": 24}
    assert LabelCensus.from_dict(c.to_dict()) == c


def test_custom_spec_maps_values():
    label = np.array([[[255, 7, 7, 0]]], np.uint8)
    c = count_labels(label, LabelSpec(background=0, foreground=7, ignore=255))
    assert (c.background, c.foreground, c.ignore) == (1, 2, 1)


def test_values_outside_spec_are_named():
    label = np.array([[[0, 1, 5, 9]]], np.uint8)
    with pytest.raises(ValueError, match=r"vol X: label values \[5, 9\]"):
        count_labels(label, LabelSpec(), where="vol X")
