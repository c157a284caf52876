import re

import numpy as np
import pytest
import tifffile

from vesuvius_data import VolumeStore
from vesuvius_data.commands import ingest
from vesuvius_data.store.competition import ingest_competition, scan_competition
from vesuvius_data.synthetic import write_competition_layout

SHAPE = (16, 24, 32)


@pytest.fixture
def layout(tmp_path):
    src = tmp_path / "comp"
    ids = write_competition_layout(src, n_volumes=4, shape=SHAPE, seed=5)
    return src, ids


def _append_csv(src, *rows):
    with open(src / "train.csv", "a") as f:
        for r in rows:
            f.write(",".join(r) + "\n")


def test_cli_ingests_and_prints_census(layout, tmp_path, capsys):
    src, ids = layout
    assert ingest.main([str(src), str(tmp_path / "s.zarr"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "ingested 4 volumes" in out
    assert "surface/labeled" in out and "1+2 (naive)" in out
    store = VolumeStore.open(tmp_path / "s.zarr")
    assert store.ids() == sorted(ids)
    for vid in ids:
        img = tifffile.imread(src / "train_images" / f"{vid}.tif")
        np.testing.assert_array_equal(store.image(vid).compute(), img)
    # the table's 'all' row is the store's census, over labeled voxels
    c = store.census()
    all_row = next(line for line in out.splitlines() if line.strip().startswith("all"))
    assert f"{c.foreground_share_of_labeled:.1%}" in all_row


def test_rerun_skips_finished_and_redoes_half_written(layout, tmp_path):
    src, ids = layout
    store = VolumeStore.create(tmp_path / "s.zarr")
    ingest_competition(src, store, progress=False)
    # simulate a crash during one volume: its data stays, its manifest entry is gone
    store._commit(ids[1], None)
    done = []
    report = ingest_competition(src, VolumeStore.open(tmp_path / "s.zarr", mode="a"),
                                progress=False, on_done=done.append)
    assert done == [ids[1]]
    assert sorted(report.skipped) == sorted(set(ids) - {ids[1]})
    assert VolumeStore.open(tmp_path / "s.zarr").ids() == sorted(ids)


def test_missing_files_are_warned_and_listed(layout, tmp_path, capsys):
    src, ids = layout
    _append_csv(src, ("111", "26002"), ("222", "26002"))
    (src / "train_images" / "333.tif").write_bytes(
        (src / "train_images" / f"{ids[0]}.tif").read_bytes())
    assert ingest.main([str(src), str(tmp_path / "s.zarr"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "2 ids in train.csv have no files: 111, 222" in err
    assert "1 files have no train.csv row" in err and "333" in err


def test_missing_label_is_an_error_naming_the_file(layout, tmp_path, capsys):
    src, ids = layout
    (src / "train_labels" / f"{ids[2]}.tif").unlink()
    assert ingest.main([str(src), str(tmp_path / "s.zarr"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{ids[2]}.tif: no label file for this image" in err
    assert len(VolumeStore.open(tmp_path / "s.zarr")) == 3  # the others still went in


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        ("garbage_image", "train_images/{vid}.tif: unreadable TIFF"),
        ("truncated_label", "train_labels/{vid}.tif: unreadable TIFF"),
        ("shape_mismatch", r"train_labels/{vid}.tif: shape \(16, 24, 31\) differs"),
        ("two_d", "train_images/{vid}.tif: expected a 3-D stack"),
        ("bad_label_values", r"train_labels/{vid}.tif: .*label values \[5\]"),
    ],
)
def test_bad_files_give_specific_errors(layout, tmp_path, corrupt, match):
    src, ids = layout
    vid = ids[0]
    img_path, lab_path = src / "train_images" / f"{vid}.tif", src / "train_labels" / f"{vid}.tif"
    if corrupt == "garbage_image":
        img_path.write_bytes(b"II*\x00not really a tiff")
    elif corrupt == "truncated_label":
        data = lab_path.read_bytes()
        lab_path.write_bytes(data[: len(data) // 2])
    elif corrupt == "shape_mismatch":
        tifffile.imwrite(lab_path, np.zeros((16, 24, 31), np.uint8), compression="lzw")
    elif corrupt == "two_d":
        tifffile.imwrite(img_path, np.zeros((24, 32), np.uint8))
    else:
        tifffile.imwrite(lab_path, np.full(SHAPE, 5, np.uint8), compression="lzw")
    report = ingest_competition(src, VolumeStore.create(tmp_path / "s.zarr"), progress=False)
    assert set(report.failed) == {vid}
    assert re.search(match.format(vid=vid), report.failed[vid]), report.failed[vid]
    assert sorted(report.ingested) == sorted(ids[1:])


def test_layout_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        scan_competition(tmp_path / "nothing")
    (tmp_path / "train_images").mkdir()
    with pytest.raises(FileNotFoundError, match="train.csv: missing"):
        scan_competition(tmp_path)
    (tmp_path / "train.csv").write_text("name,scroll\n1,2\n")
    (tmp_path / "train_labels").mkdir()
    with pytest.raises(ValueError, match="needs an 'id' column"):
        scan_competition(tmp_path)
    assert ingest.main([str(tmp_path), str(tmp_path / "s.zarr"), "--quiet"]) == 2
    assert "needs an 'id' column" in capsys.readouterr().err
