"""Derived targets: chunk-wise equals whole-volume; stored and delivered by the loader."""

import dask.array as da
import numpy as np
import pytest

from vesuvius_data import VolumeStore, build_index, make_loader
from vesuvius_data.commands import derive
from vesuvius_data.derived import derive_targets, medial_skeleton, signed_distance


def test_signed_distance_by_hand():
    label = np.zeros((1, 1, 9), np.uint8)
    label[0, 0, 3:6] = 1  # a sheet 3 voxels thick along x
    sdt = signed_distance(label, clip=2.5)[0, 0]
    np.testing.assert_allclose(sdt, [2.5, 2, 1, -1, -2, -1, 1, 2, 2.5])
    skel = medial_skeleton(label, clip=3)[0, 0]
    assert skel[4] == 1 and skel[3] == skel[5] == 0  # the middle of the sheet
    assert list(skel[[0, 8]]) == [2, 2]  # farthest background from the sheet (at the faces)
    assert not medial_skeleton(label, clip=2.5)[0, 0, [0, 8]].any()  # beyond clip: no target


def test_gap_medial_surface_lies_between_sheets():
    label = np.zeros((12, 4, 4), np.uint8)
    label[2:4] = 1
    label[9:11] = 1  # two sheets with a gap of 5 planes (4..8), middle plane 6
    skel = medial_skeleton(label, clip=10)
    assert np.all(skel[6] == 2) and not np.any(skel[[4, 5, 7, 8]] == 2)
    label[4:9, :, :2] = 2  # unlabeled part of the gap: never a gap target
    assert not np.any(medial_skeleton(label, clip=10)[6, :, :2] == 2)


@pytest.mark.parametrize("block", [(16, 16, 16), (20, 24, 12)])
def test_chunkwise_equals_whole_volume(small_pair, block):
    _, label = small_pair
    got = derive_targets(da.from_array(label, chunks=16), clip=6.0, block=block)
    np.testing.assert_array_equal(got["sdt"].compute(),
                                  signed_distance(label, clip=6.0).astype(np.float16))
    np.testing.assert_array_equal(got["skeleton"].compute(), medial_skeleton(label, clip=6.0))


def test_tool_stores_targets_and_loader_delivers_them(tmp_path, store, capsys):
    assert derive.main([str(tmp_path / "store.zarr"), "--clip", "6", "--quiet"]) == 0
    assert "for 2 volumes" in capsys.readouterr().out
    assert derive.main([str(tmp_path / "store.zarr"), "--clip", "6", "--quiet"]) == 0
    assert "for 0 volumes" in capsys.readouterr().out  # resumable: nothing redone
    s = VolumeStore.open(tmp_path / "store.zarr")
    assert s.info("vol_a").derived == {"sdt": {"clip": 6.0}, "skeleton": {"clip": 6.0}}
    label = s.label("vol_a").compute()
    np.testing.assert_array_equal(s.zarr_array("vol_a", "skeleton")[...],
                                  medial_skeleton(label, clip=6.0))
    index = build_index(s, 16, 8, progress=False)
    batch = next(iter(make_loader(s, index, "uniform", num_workers=0, samples_per_epoch=2)))
    assert batch["sdt"].dtype.is_floating_point and batch["skeleton"].shape == (2, 1, 16, 16, 16)
    z, y, x = (int(c) for c in batch["location"][0])
    vid = index.volume_ids[index.volume[int(batch["row"][0])]]
    np.testing.assert_array_equal(
        batch["sdt"][0, 0].numpy(), s.zarr_array(vid, "sdt")[z:z + 16, y:y + 16, x:x + 16])


def test_rewritten_volume_loses_stale_targets(tmp_path, store, small_pair):
    assert derive.main([str(tmp_path / "store.zarr"), "--quiet"]) == 0
    store = VolumeStore.open(tmp_path / "store.zarr", mode="a")
    store.add_volume("vol_a", *small_pair, overwrite=True)
    assert store.info("vol_a").derived == {}
    with pytest.raises(ValueError, match="does not match volume"):
        store.add_derived("vol_b", {"sdt": np.zeros((2, 2, 2), np.float16)})
