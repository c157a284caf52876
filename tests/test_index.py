"""The patch index: exact against brute force, incremental, atomic, CLI, distributed, huge."""

from __future__ import annotations

import json
import threading
import time

import dask.array as da
import numpy as np
import psutil
import pytest
import zarr.storage
from conftest import CountingStore

from vesuvius_data import LabelSpec, PatchIndex, VolumeSource, VolumeStore, build_index
from vesuvius_data.commands import index as index_tool
from vesuvius_data.index.build import SmallVolumeWarning
from vesuvius_data.index.patch_index import IndexParams


def brute_force_rows(label, image, P, S, air=0, spec=None):
    """Every grid corner whose patch fits, counted voxel by voxel."""
    spec = spec or LabelSpec()
    rows = []
    for z in range(0, label.shape[0] - P[0] + 1, S[0]):
        for y in range(0, label.shape[1] - P[1] + 1, S[1]):
            for x in range(0, label.shape[2] - P[2] + 1, S[2]):
                lab = label[z:z + P[0], y:y + P[1], x:x + P[2]]
                padded = np.pad(label, 1, constant_values=255)
                bgp = padded == spec.background
                zz, yy, xx = z + 1, y + 1, x + 1
                touch = np.zeros(lab.shape, bool)
                for dz, dy, dx in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0),
                                   (0, 0, 1), (0, 0, -1)):
                    touch |= bgp[zz + dz:zz + dz + P[0], yy + dy:yy + dy + P[1],
                                 xx + dx:xx + dx + P[2]]
                img = image[z:z + P[0], y:y + P[1], x:x + P[2]]
                rows.append((z, y, x, int((lab == spec.foreground).sum()),
                             int((lab != spec.ignore).sum()), int((img > air).sum()),
                             int(((lab == spec.foreground) & touch).sum())))
    return rows


@pytest.mark.parametrize(("P", "S", "block"), [
    ((16, 16, 16), (8, 8, 8), (128, 128, 128)),
    ((16, 24, 8), (8, 6, 4), (10, 13, 7)),  # blocks cut cells, anisotropic patches
    ((32, 32, 32), (32, 32, 32), (16, 16, 16)),
])
def test_index_equals_brute_force(store, P, S, block):
    index = build_index(store, P, S, air_threshold=100, block=block, progress=False)
    got = {}
    corners = index.corners
    for r in range(len(index)):
        vid = index.volume_ids[index.volume[r]]
        got[(vid, *corners[r])] = tuple(int(index.columns[c][r]) for c in
                                        ("surface", "labeled", "tissue", "boundary"))
    want = {}
    for vid in store.ids():
        lab, img = store.label(vid).compute(), store.image(vid).compute()
        for z, y, x, *counts in brute_force_rows(lab, img, P, S, air=100):
            want[(vid, z, y, x)] = tuple(counts)
    assert got == want
    # census covers whole volumes, also voxels no patch reaches
    c = index.census()
    assert c == store.census()
    assert index.fg_ratio.max() <= 1 and index.fg_ratio.min() >= 0


def test_ratios_and_class_weights(store):
    index = build_index(store, 16, 8, progress=False)
    r = 5
    assert index.fg_ratio[r] == pytest.approx(index.surface[r] / index.labeled[r])
    assert index.labeled_ratio[r] == pytest.approx(index.labeled[r] / 16**3)
    c = index.census()
    f_bg, f_fg = c.background / c.labeled, c.foreground / c.labeled
    w = index.class_weights()
    assert w["foreground"] == pytest.approx(1 / (2 * f_fg))
    assert w["background"] == pytest.approx(1 / (2 * f_bg))
    assert f_bg * w["background"] + f_fg * w["foreground"] == pytest.approx(1.0)
    w2 = index.class_weights("sqrt-inverse")
    assert f_bg * w2["background"] + f_fg * w2["foreground"] == pytest.approx(1.0)
    assert 1 < w2["foreground"] < w["foreground"]
    assert index.focal_alpha() == pytest.approx(f_bg)
    with pytest.raises(ValueError, match="valid: inverse, sqrt-inverse"):
        index.class_weights("magic")


def test_compact_dtypes_and_size_at_scroll_scale():
    index = build_index([VolumeSource("v", da.zeros((64, 64, 64), np.uint8, chunks=32))],
                        32, 16, progress=False)
    bytes_per_row = index.nbytes() / len(index)
    assert bytes_per_row == 24
    rows_at_1e12 = (10_000 // 64) ** 3  # 10^12 voxels, P=128, S=64
    assert rows_at_1e12 * bytes_per_row < 100e6


def test_patch_not_multiple_of_stride_is_a_clear_error(store):
    with pytest.raises(ValueError, match="multiple of the stride"):
        build_index(store, 20, 8, progress=False)


def test_small_volume_is_skipped_with_warning_or_strict_error(store):
    with pytest.warns(SmallVolumeWarning, match="vol_b of shape \\(32, 40, 48\\)"):
        index = build_index(store, 48, 16, progress=False)
    assert index.volume_ids == ["vol_a"]
    assert index.meta["build"]["skipped_small"] == ["vol_b"]
    with pytest.raises(ValueError, match="vol_b.*smaller than the patch"):
        build_index(store, 48, 16, strict=True, progress=False)


def test_invalid_label_values_name_the_volume():
    label = da.from_array(np.full((16, 16, 16), 7, np.uint8), chunks=8)
    with pytest.raises(ValueError, match="volume weird: 4096 label values outside"):
        build_index([VolumeSource("weird", label)], 8, 4, progress=False)


def test_incremental_rebuild_reads_only_changed_volumes(tmp_path, store, small_pair):
    first = build_index(store, 16, 8, progress=False)
    first.save(tmp_path / "i.npz")
    previous = PatchIndex.load(tmp_path / "i.npz")
    image, label = small_pair
    store.add_volume("vol_a", image, np.where(label == 1, 0, label).astype(np.uint8),
                     scroll_id="s1", overwrite=True)  # rewritten: surface erased
    store.add_volume("vol_c", image, label, scroll_id="s3")  # new
    store.remove("vol_b")  # gone
    counting = CountingStore(zarr.storage.LocalStore(tmp_path / "store.zarr", read_only=True))
    second = build_index(VolumeStore.open(counting), 16, 8, previous=previous, progress=False)
    assert counting.volumes_read("label") == {"vol_a", "vol_c"}
    b = second.meta["build"]
    assert sorted(b["built"]) == ["vol_a", "vol_c"] and b["dropped"] == ["vol_b"]
    assert second.volume_ids == ["vol_a", "vol_c"]
    assert second.surface[second.rows_of("vol_a")].sum() == 0
    np.testing.assert_array_equal(second.surface[second.rows_of("vol_c")],
                                  first.surface[first.rows_of("vol_a")])
    # unchanged volumes are copied, not re-read: a third build reads no chunk at all
    second.save(tmp_path / "i.npz")
    counting.chunk_reads.clear()
    third = build_index(VolumeStore.open(counting), 16, 8,
                        previous=PatchIndex.load(tmp_path / "i.npz"), progress=False)
    assert counting.chunk_reads == []
    assert third.meta["build"]["reused"] == ["vol_a", "vol_c"]
    assert third.meta["build"]["built"] == []
    for name in third.columns:
        np.testing.assert_array_equal(third.columns[name], second.columns[name])
    # a different geometry cannot reuse anything
    fourth = build_index(store, 32, 16, previous=third, progress=False)
    assert fourth.meta["build"]["rebuilt_all_because"]


def test_fingerprint_follows_content(tmp_path, store, small_pair):
    a = build_index(store, 16, 8, progress=False)
    b = build_index(store, 16, 8, progress=False)
    assert a.volumes["vol_a"]["fingerprint"] == b.volumes["vol_a"]["fingerprint"]
    image, label = small_pair
    changed = label.copy()
    changed[40, 50, 60] = 2 if changed[40, 50, 60] != 2 else 0
    store.add_volume("vol_a", image, changed, overwrite=True)
    c = build_index(store, 16, 8, progress=False)
    assert c.volumes["vol_a"]["fingerprint"] != a.volumes["vol_a"]["fingerprint"]
    assert c.volumes["vol_b"]["fingerprint"] == a.volumes["vol_b"]["fingerprint"]


def test_save_is_atomic_under_a_crash(tmp_path, store, monkeypatch):
    index = build_index(store, 16, 8, progress=False)
    path = tmp_path / "i.npz"
    index.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        build_index(store, 32, 16, progress=False).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old index, intact
    assert not list(tmp_path.glob("*.partial"))
    assert PatchIndex.load(path).params.patch_size == (16, 16, 16)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="build one with vesuvius-index"):
        PatchIndex.load(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="not a readable PatchIndex"):
        PatchIndex.load(tmp_path / "bad.npz")


def test_params_validation():
    with pytest.raises(ValueError, match="three positive ints"):
        IndexParams((0, 8, 8), (4, 4, 4), LabelSpec())


def test_cli_in_process(tmp_path, store, capsys):
    out = tmp_path / "idx.npz"
    argv = [str(tmp_path / "store.zarr"), "--patch-size", "16", "--stride", "8", "--out",
            str(out), "--quiet", "--report", str(tmp_path / "r.png")]
    assert index_tool.main(argv) == 0
    text = capsys.readouterr().out
    assert "surface share of LABELED voxels" in text and "suggested class weights" in text
    _assert_picture(tmp_path / "r.png")
    assert index_tool.main(argv[:-2] + ["--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == len(PatchIndex.load(out))
    assert summary["build"]["reused"] == ["vol_a", "vol_b"]  # incremental by default
    c = store.census()
    assert summary["census"]["surface_share_of_labeled"] == pytest.approx(
        c.foreground_share_of_labeled)
    assert index_tool.main([str(tmp_path / "nope.zarr"), "--patch-size", "16"]) == 2
    assert "no store" in capsys.readouterr().err
    assert index_tool.main(argv[:3] + ["--stride", "6", "--out", str(out), "--quiet"]) == 2


@pytest.mark.slow
def test_cli_starts_a_local_cluster(tmp_path, store, capsys):
    out = tmp_path / "w.npz"
    assert index_tool.main([str(tmp_path / "store.zarr"), "--patch-size", "16", "--out",
                            str(out), "--workers", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    local = build_index(store, 16, 8, progress=False)
    assert summary["rows"] == len(local)
    np.testing.assert_array_equal(PatchIndex.load(out).surface, local.surface)


@pytest.mark.slow
def test_distributed_local_cluster_with_two_processes(tmp_path, store):
    from distributed import Client, LocalCluster

    local = build_index(store, 16, 8, progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        remote = build_index(store, 16, 8, client=client, progress=False)
    for name in local.columns:
        np.testing.assert_array_equal(remote.columns[name], local.columns[name])
    assert remote.volumes == local.volumes


def _lazy_sheets(side: int, chunk: int) -> da.Array:
    """A side^3 label volume made chunk by chunk on demand: planar sheets every 16 voxels."""

    def make(block_info=None):
        loc = block_info[None]["array-location"]
        z = np.arange(*loc[0])[:, None, None]
        shape = tuple(b - a for a, b in loc)
        out = np.full(shape, 2, np.uint8)
        out[np.broadcast_to(z % 16 < 6, shape)] = 0
        out[np.broadcast_to(z % 16 < 2, shape)] = 1
        return out

    return da.map_blocks(make, chunks=((chunk,) * (side // chunk),) * 3, dtype=np.uint8)


@pytest.mark.slow
def test_huge_lazy_volume_in_bounded_memory():
    side = 1024  # 1.07 G voxels, never materialised
    label = _lazy_sheets(side, 128)
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    t = threading.Thread(target=watch)
    t.start()
    try:
        index = build_index([VolumeSource("huge", label)], 256, 128, block=(128, 128, 128),
                            progress=False)
    finally:
        done.set()
        t.join()
    growth = peak[0] - base
    print(f"RSS grew {growth / 1e6:.0f} MB indexing a {side**3 / 1e6:.0f} MB label volume")
    assert growth < 0.25 * side**3  # dask overlap halos grew 392 MB here; face planes ~90
    assert len(index) == 7**3
    # every patch holds 16 sheets: 2 surface planes of 16 -> 1/8 of the patch, 6/16 labeled
    np.testing.assert_array_equal(index.surface, 256**3 // 8)
    np.testing.assert_array_equal(index.labeled, 256**3 * 6 // 16)
    # boundary: the surface plane next to background (plane 1 of each period; plane 0 touches
    # the unlabeled plane 15 below it, and plane 1 touches background plane 2)
    np.testing.assert_array_equal(index.columns["boundary"], 256**3 // 16)


def _assert_picture(path, min_side: int = 300) -> None:
    """A PNG with content: a decodable image of a reasonable size that is not blank."""
    from matplotlib.image import imread

    img = imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) >= min_side
    assert img[..., :3].std() > 0.05  # axes, curves and text, not an empty canvas
