import functools
import http.server
import threading

import numpy as np
import pytest
import zarr
import zarr.storage
from conftest import CountingStore

from vesuvius_data import VolumeStore
from vesuvius_data.synthetic import make_volume


def test_round_trip_and_metadata(tmp_path, store, small_pair):
    image, label = small_pair
    reopened = VolumeStore.open(tmp_path / "store.zarr")
    assert reopened.ids() == ["vol_a", "vol_b"]
    info = reopened.info("vol_a")
    assert info.scroll_id == "s1" and info.shape == image.shape
    assert info.census.total == label.size
    assert info.census.foreground == int((label == 1).sum())
    img = reopened.image("vol_a")
    assert img.chunksize == (16, 16, 16)  # dask chunks are zarr chunks
    np.testing.assert_array_equal(img.compute(), image)
    np.testing.assert_array_equal(reopened.label("vol_a")[5:20, 3:9, 40:].compute(),
                                  label[5:20, 3:9, 40:])
    group = zarr.open_group(tmp_path / "store.zarr", mode="r")
    attrs = group["volumes/vol_a"].attrs
    assert attrs["scroll_id"] == "s1" and attrs["label_spec"] == {
        "background": 0, "foreground": 1, "ignore": 2}
    assert group["volumes/vol_a/label"].metadata.zarr_format == 3


def test_existing_id_needs_overwrite(store, small_pair):
    image, label = small_pair
    with pytest.raises(FileExistsError, match="overwrite=True"):
        store.add_volume("vol_a", image, label)
    new_label = np.zeros_like(label)
    store.add_volume("vol_a", image, new_label, scroll_id="s9", overwrite=True)
    assert store.info("vol_a").scroll_id == "s9"
    assert int(store.label("vol_a").max().compute()) == 0


def test_create_refuses_existing_store(tmp_path, store):
    with pytest.raises(FileExistsError):
        VolumeStore.create(tmp_path / "store.zarr")


def test_open_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no store"):
        VolumeStore.open(tmp_path / "nope.zarr")
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(ValueError, match="not a vesuvius-data VolumeStore"):
        VolumeStore.open(tmp_path / "plain.zarr")


def test_unknown_id_lists_known(store):
    with pytest.raises(KeyError, match="known: vol_a, vol_b"):
        store.image("nope")


@pytest.mark.parametrize(
    ("image", "label", "match"),
    [
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), "must be 3-D"),
        (np.zeros((8, 8, 8), np.uint8), np.zeros((8, 8, 9), np.uint8), "differs from label"),
        (np.zeros((8, 8, 8), np.float64), np.zeros((8, 8, 8), np.uint8), "uint8, uint16, int16"),
        (np.full((8, 8, 8), np.nan, np.float32), np.zeros((8, 8, 8), np.uint8), "512 NaN or inf"),
        (np.zeros((8, 8, 8), np.int32), np.zeros((8, 8, 8), np.uint8), "got int32"),
        (np.zeros((8, 8, 8), np.uint8), np.zeros((8, 8, 8), np.float32), "must be integer"),
        (np.zeros((8, 8, 8), np.uint8), np.full((8, 8, 8), 7, np.uint8), r"values \[7\]"),
        (np.zeros((8, 8, 8), np.uint8), np.full((8, 8, 8), -1, np.int16), r"span \[-1, -1\]"),
        (np.zeros((8, 8, 8), np.uint8), np.full((8, 8, 8), 513, np.int32), "outside"),
    ],
)
def test_bad_input_errors(store, image, label, match):
    with pytest.raises(ValueError, match=match):
        store.add_volume("bad", image, label)
    assert "bad" not in store


def test_bad_ids(store, small_pair):
    for vid in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="invalid volume id"):
            store.add_volume(vid, *small_pair)


def test_crash_mid_write_leaves_no_complete_volume(tmp_path, small_pair, monkeypatch):
    image, label = small_pair
    s = VolumeStore.create(tmp_path / "s.zarr", chunks=(16, 16, 16))
    real_setitem = zarr.Array.__setitem__

    def crash_on_label(self, key, value):
        if self.path.endswith("label"):
            raise KeyboardInterrupt("simulated crash")
        return real_setitem(self, key, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", crash_on_label)
    with pytest.raises(KeyboardInterrupt):
        s.add_volume("v", image, label)
    monkeypatch.undo()
    # the image chunks are on disk, but nobody sees the volume
    assert (tmp_path / "s.zarr" / "volumes" / "v" / "image").exists()
    reopened = VolumeStore.open(tmp_path / "s.zarr", mode="a")
    assert "v" not in reopened and reopened.ids() == []
    with pytest.raises(KeyError):
        reopened.image("v")
    # and a retry needs no overwrite flag: the half-written volume never counted
    reopened.add_volume("v", image, label)
    np.testing.assert_array_equal(VolumeStore.open(tmp_path / "s.zarr").label("v"), label)


def test_crash_during_overwrite_unpublishes_first(tmp_path, store, small_pair, monkeypatch):
    image, label = small_pair
    monkeypatch.setattr(zarr.Array, "__setitem__",
                        lambda self, k, v: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        store.add_volume("vol_a", image, label, overwrite=True)
    monkeypatch.undo()
    assert VolumeStore.open(tmp_path / "store.zarr").ids() == ["vol_b"]


def test_lazy_access_reads_only_touched_chunks(tmp_path, store):
    counting = CountingStore(zarr.storage.LocalStore(tmp_path / "store.zarr", read_only=True))
    s = VolumeStore.open(counting)
    img = s.image("vol_a")  # 48x56x64 in 16^3 chunks: 3*4*4 = 48 chunks
    assert counting.chunk_reads == []  # opening reads metadata only
    window = img[10:20, 20:40, 0:16].compute()  # z chunk 0-1, y chunks 1-2, x chunk 0
    assert window.shape == (10, 20, 16)
    touched = {k.split("/c/")[1] for k in counting.chunk_reads}
    assert touched == {"0/1/0", "0/2/0", "1/1/0", "1/2/0"}


def test_register_zarr_and_ome_zarr_without_copy(tmp_path, store, small_pair):
    image, label = small_pair
    ext = zarr.open_group(tmp_path / "ext.ome.zarr", mode="w")
    datasets = []
    for level, step in enumerate((1, 2)):
        ext.create_array(f"img/{level}", data=image[::step, ::step, ::step])
        ext.create_array(f"lab/{level}", data=label[::step, ::step, ::step])
        datasets.append({"path": str(level)})
    for name in ("img", "lab"):
        ext[name].attrs["multiscales"] = [{"version": "0.4", "datasets": datasets}]
    info = store.register("ext1", tmp_path / "ext.ome.zarr" / "img",
                          tmp_path / "ext.ome.zarr" / "lab", scroll_id="s3", level=1)
    assert info.shape == image[::2, ::2, ::2].shape
    reopened = VolumeStore.open(tmp_path / "store.zarr")
    np.testing.assert_array_equal(reopened.label("ext1"), label[::2, ::2, ::2])
    # a plain zarr array object works too, and nothing was copied into the store
    store.register("ext0", ext["img/0"], ext["lab/0"])
    np.testing.assert_array_equal(store.image("ext0"), image)
    assert not (tmp_path / "store.zarr" / "volumes" / "ext0").exists()
    with pytest.raises(ValueError, match="level 5 out of range"):
        store.register("ext2", tmp_path / "ext.ome.zarr" / "img",
                       tmp_path / "ext.ome.zarr" / "lab", level=5)
    with pytest.raises(ValueError, match="differs from label"):
        store.register("ext3", ext["img/0"], ext["lab/1"])


def test_read_only_store_refuses_writes(tmp_path, store, small_pair):
    ro = VolumeStore.open(tmp_path / "store.zarr")
    with pytest.raises(PermissionError, match="read-only.*mode='a'"):
        ro.add_volume("new", *small_pair)
    assert VolumeStore.open(tmp_path / "store.zarr").ids() == ["vol_a", "vol_b"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """Serve tmp_path over loopback HTTP; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_remote_read_over_http(tmp_path, store, small_pair, http_root):
    image, label = small_pair
    remote = VolumeStore.open(f"{http_root}/store.zarr")
    assert remote.ids() == ["vol_a", "vol_b"]  # no listing needed: the manifest says
    np.testing.assert_array_equal(remote.image("vol_a")[:, 8:30, 50:].compute(),
                                  image[:, 8:30, 50:])
    np.testing.assert_array_equal(remote.label("vol_a").compute(), label)
    with pytest.raises(ValueError, match="read-only"):
        VolumeStore.open(f"{http_root}/store.zarr", mode="a")


def test_uint16_images_are_kept(tmp_path):
    s = VolumeStore.create(tmp_path / "u16.zarr")
    image = (make_volume((16, 16, 16), seed=1)[0].astype(np.uint16) * 200)
    s.add_volume("v", image, np.zeros(image.shape, np.uint8))
    assert s.image("v").dtype == np.uint16
    np.testing.assert_array_equal(s.image("v"), image)


def test_partial_arrays_survive_a_concurrent_creator_of_the_group(tmp_path, monkeypatch):
    """zarr's require_group checks, then creates: a second torchrun rank that creates the
    volume's group in between made the first fail with "a group exists" (seen in CI)."""
    from zarr.errors import ContainsGroupError

    store = VolumeStore.create(tmp_path / "s.zarr", chunks=(8, 8, 8))
    original = zarr.Group.require_group
    raced = []

    def other_process_first(self, name, **kwargs):
        original(self, name, **kwargs)  # the other process creates it between check and create
        raced.append(name)
        raise ContainsGroupError(f"A group exists in store at path {name!r}.")

    monkeypatch.setattr(zarr.Group, "require_group", other_process_first)
    arrays = store.partial_arrays("v", (8, 8, 8), {"image": np.uint8, "label": np.uint8})
    assert raced == ["volumes", "v"]
    arrays["image"][...] = 3
    monkeypatch.undo()
    assert store.partial_arrays("v", (8, 8, 8), {"image": np.uint8})["image"][0, 0, 0] == 3
