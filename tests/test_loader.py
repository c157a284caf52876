"""The fast loader: exact windows, reproducible with workers, torchio integration, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio
import zarr
import zarr.storage

from vesuvius_data import PatchIndex, VolumeStore, build_index, make_loader
from vesuvius_data.normalize import _zscore
from vesuvius_data.sampling import StrategySampler
from vesuvius_data.store.chunk_reader import ChunkReader, WindowCache
from vesuvius_data.synthetic import make_volume


@pytest.fixture
def indexed(store) -> tuple[VolumeStore, PatchIndex]:
    return store, build_index(store, 16, 8, progress=False)


@pytest.mark.parametrize("codec", ["blosc", "zstd", "gzip"])
def test_chunk_fast_path_equals_zarr_on_every_chunk(tmp_path, codec):
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    compressor = {"blosc": BloscCodec(cname="lz4"), "zstd": ZstdCodec(), "gzip": GzipCodec()}
    data = np.random.default_rng(0).integers(0, 60000, (37, 20, 45)).astype(np.uint16)
    arr = zarr.create_array(tmp_path / "a.zarr", shape=data.shape, dtype=data.dtype,
                            chunks=(16, 16, 16), compressors=compressor[codec], fill_value=7)
    arr[:, :, :32] = data[:, :, :32]  # chunks with x index 2 stay unwritten (fill value)
    expected = np.full(data.shape, 7, np.uint16)
    expected[:, :, :32] = data[:, :, :32]
    arr = zarr.open_array(tmp_path / "a.zarr", mode="r")
    fast, general = ChunkReader(arr), ChunkReader(arr, fast=False)
    assert fast.fast == (codec != "gzip") and not general.fast
    for idx in np.ndindex(3, 2, 3):
        got = fast.read(idx)
        np.testing.assert_array_equal(got, general.read(idx))
        sl = tuple(slice(i * 16, i * 16 + 16) for i in idx)
        np.testing.assert_array_equal(got, expected[sl])


def test_fast_array_equals_zarr_on_any_slice(store):
    from vesuvius_data.store.chunk_reader import FastArray

    arr = store.zarr_array("vol_a", "label")  # 48x56x64 in 16^3 chunks
    fast = FastArray(arr)
    rng = np.random.default_rng(0)
    for _ in range(40):
        lo = [int(rng.integers(0, n)) for n in arr.shape]
        hi = [int(rng.integers(a + 1, n + 1)) for a, n in zip(lo, arr.shape, strict=True)]
        key = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        np.testing.assert_array_equal(fast[key], arr[key])
    np.testing.assert_array_equal(fast[0:0, :, :], arr[0:0, :, :])


def test_window_cache_assembles_windows_and_bounds_memory(store, small_pair):
    image, _ = small_pair
    cache = WindowCache(store.zarr_array, max_bytes=3 * 16**3)
    rng = np.random.default_rng(0)
    for _ in range(30):
        corner = tuple(int(rng.integers(0, s - w + 1)) for s, w in zip(image.shape, (9, 20, 17),
                                                                         strict=True))
        win = cache.window("vol_a", "image", corner, (9, 20, 17))
        np.testing.assert_array_equal(
            win, image[corner[0]:corner[0] + 9, corner[1]:corner[1] + 20, corner[2]:corner[2] + 17])
        assert cache.cached_bytes <= 3 * 16**3
    with pytest.raises(ValueError, match="leaves image of volume vol_a"):
        cache.window("vol_a", "image", (40, 0, 0), (9, 9, 9))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float16, np.float32])
def test_zscore_fast_path_equals_numpy(dtype):
    x = (np.random.default_rng(1).random((20, 21, 22)) * 200).astype(dtype)
    if dtype == np.int16:
        x = (x.astype(np.int32) * 100 - 10000).astype(dtype)  # negative values, wide range
    ref = (x.astype(np.float64) - x.astype(np.float64).mean()) / x.astype(np.float64).std()
    np.testing.assert_allclose(_zscore(x), ref, atol=1e-5)
    assert np.all(_zscore(np.full((4, 4, 4), 9, dtype)) == 0)


def test_windows_equal_store_data_at_recorded_corners(indexed):
    store, index = indexed
    loader = make_loader(store, index, "uniform", batch_size=3, num_workers=0, seed=1,
                         samples_per_epoch=12, normalize="unit")
    seen = 0
    for batch in loader:
        for b in range(batch["image"].shape[0]):
            row = int(batch["row"][b])
            z, y, x = (int(c) for c in batch["location"][b])
            assert (z, y, x) == tuple(index.corners[row])
            vid = index.volume_ids[index.volume[row]]
            lab = store.label(vid)[z:z + 16, y:y + 16, x:x + 16].compute()
            img = store.image(vid)[z:z + 16, y:y + 16, x:x + 16].compute()
            np.testing.assert_array_equal(batch["label"][b, 0].numpy(), lab)
            np.testing.assert_allclose(batch["image"][b, 0].numpy(), img / 255.0, atol=1e-7)
            seen += 1
    assert seen == 12
    assert batch["label"].dtype == torch.uint8 and batch["image"].dtype == torch.float32


def _epoch(loader):
    return [(b["row"].tolist(), b["image"].sum().item()) for b in loader]


@pytest.mark.slow
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_reproducible_with_workers(indexed, context):
    store, index = indexed
    flips = tio.RandomFlip(axes=(0, 1, 2), flip_probability=0.5)
    kw = {"batch_size": 2, "seed": 3, "samples_per_epoch": 10, "transforms": flips}
    ref = make_loader(store, index, "label-weighted", num_workers=0, **kw)
    par = make_loader(store, index, "label-weighted", num_workers=2,
                      multiprocessing_context=context, **kw)
    first = _epoch(ref)
    assert _epoch(par) == first  # same rows, same augmented pixels, whatever the workers
    assert _epoch(ref) != first  # the next epoch draws anew ...
    ref.set_epoch(0)
    assert _epoch(ref) == first  # ... and set_epoch replays one (resume)


def test_transforms_are_seeded_per_item(indexed):
    store, index = indexed
    flips = tio.RandomFlip(axes=(0,), flip_probability=0.5)
    a = make_loader(store, index, "uniform", num_workers=0, samples_per_epoch=16, seed=0,
                    normalize="unit", transforms=flips)
    plain = make_loader(store, index, "uniform", num_workers=0, samples_per_epoch=16, seed=0,
                        normalize="unit")
    flipped = same = 0
    for ba, bp in zip(a, plain, strict=True):
        for i in range(2):
            x, y = ba["image"][i, 0], bp["image"][i, 0]
            if torch.equal(x, y):
                same += 1
            elif torch.equal(x, torch.flip(y, dims=(0,))):
                flipped += 1
            assert torch.equal(ba["label"][i, 0],
                               bp["label"][i, 0] if torch.equal(x, y) else
                               torch.flip(bp["label"][i, 0], dims=(0,)))
    assert flipped > 0 and same > 0 and flipped + same == 16


def test_hard_negative_feedback_steers_later_draws(indexed):
    store, index = indexed
    loader = make_loader(store, index, "hard-negative", num_workers=0, samples_per_epoch=64,
                         seed=0, floor=0.0)
    hard = int(loader.strategy.candidates[0])
    loader.strategy.update(loader.strategy.candidates, np.full(len(loader.strategy.candidates),
                                                               1e-3))
    loader.strategy.update([hard], [50.0])
    rows = [r for b in loader for r in b["row"].tolist()]
    assert rows.count(hard) > 32


def test_loader_errors(tmp_path, indexed, small_pair):
    store, index = indexed
    with pytest.raises(ValueError, match=r"patch size \(32, 32, 32\) differs from the index's"):
        make_loader(store, index, "uniform", patch_size=32)
    with pytest.raises(ValueError, match="empty candidate set"):
        make_loader(store, index.subset(index.labeled_ratio < 0.5), "uniform",
                    min_labeled_ratio=0.5)
    with pytest.raises(ValueError, match="valid: balanced"):
        make_loader(store, index, "nope")
    image, label = small_pair
    store.add_volume("vol_a", image, label, overwrite=True)
    with pytest.raises(ValueError, match="stale index: volume 'vol_a' was rewritten"):
        make_loader(store, index, "uniform")


def test_generic_image_label_pair_without_vesuvius_conventions(tmp_path):
    """Any labels with a custom spec: 10 = foreground, 0 = background, 255 = ignore."""
    from vesuvius_data import LabelSpec

    spec = LabelSpec(background=0, foreground=10, ignore=255)
    s = VolumeStore.create(tmp_path / "other.zarr", label_spec=spec, chunks=(16, 16, 16))
    image, label = make_volume((32, 32, 32), seed=0)
    remap = np.array([0, 10, 255], np.uint8)[label]
    s.add_volume("scan-001", image, remap)
    index = build_index(s, 16, 8, progress=False)
    assert index.census().foreground == int((remap == 10).sum())
    batch = next(iter(make_loader(s, index, "balanced", num_workers=0, samples_per_epoch=4)))
    assert set(np.unique(batch["label"].numpy())) <= {0, 10, 255}


def test_torchio_queue_with_our_strategy():
    image, label = make_volume((48, 48, 48), seed=4)
    subject = tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(image)[None]),
                          label=tio.LabelMap(tensor=torch.from_numpy(label)[None]))
    sampler = StrategySampler(16, "balanced", fg_share=0.5, seed=0)
    queue = tio.Queue(tio.SubjectsDataset([subject] * 4), max_length=40, samples_per_volume=10,
                      sampler=sampler, num_workers=0, shuffle_subjects=False,
                      shuffle_patches=False, verbose=False)
    patches = [queue[i] for i in range(len(queue))]
    assert len(patches) == 40
    strategy = sampler.strategy_for(subject)
    assert len(sampler._strategies) == 1  # copies of the same subject share one index
    fg_rich = 0
    for p in patches:
        i, j, k, *_ = p[tio.LOCATION].tolist()
        crop = label[i:i + 16, j:j + 16, k:k + 16]
        np.testing.assert_array_equal(p["label"].data[0].numpy(), crop)
        labeled = (crop != 2).sum()
        fg_rich += labeled > 0 and (crop == 1).sum() / labeled > strategy.fg_min
    assert 0.25 <= fg_rich / 40 <= 0.75  # half the draws from the foreground pool


def _fill(shared, location, corners, answer):
    """Worker body: read windows through the shared cache (run in a spawned process)."""
    cache = WindowCache(VolumeStore.open(location).zarr_array, shared=shared)
    for corner in corners:
        cache.window("vol_a", "image", corner, (16, 16, 16))
    answer.put(cache.decoded_bytes)


def _corners(shape, n, seed):
    rng = np.random.default_rng(seed)
    return [tuple(int(rng.integers(0, s - 15)) for s in shape) for _ in range(n)]


def test_shared_cache_serves_chunks_another_process_decoded(store, small_pair):
    """A spawned process decodes; this process then reads the same windows decoding nothing,
    with the right pixels: one copy of each chunk for all workers."""
    import multiprocessing

    from vesuvius_data.shared_chunks import SharedChunkCache

    image, _ = small_pair
    shared = SharedChunkCache(["vol_b", "vol_a"], {"image": 16**3}, 2**20, "spawn")
    corners = _corners(image.shape, 12, 0)
    ctx = multiprocessing.get_context("spawn")
    answer = ctx.SimpleQueue()
    worker = ctx.Process(target=_fill, args=(shared, store.location, corners, answer))
    worker.start()
    decoded = answer.get()
    worker.join()
    assert worker.exitcode == 0 and decoded > 0
    cache = WindowCache(store.zarr_array, shared=shared)
    for z, y, x in corners:
        win = cache.window("vol_a", "image", (z, y, x), (16, 16, 16))
        np.testing.assert_array_equal(win, image[z:z + 16, y:y + 16, x:x + 16])
    assert cache.decoded_bytes == 0 and cache.delivered_bytes == 12 * 16**3


def test_shared_cache_stays_in_budget_and_keeps_hot_chunks(store, small_pair):
    from vesuvius_data.shared_chunks import SharedChunkCache

    image, _ = small_pair  # 48x56x64 in 16^3 chunks: 3x4x4 = 48 chunks
    shared = SharedChunkCache(["vol_a"], {"image": 16**3}, 5 * 16**3)
    cache = WindowCache(store.zarr_array, shared=shared)
    assert cache.max_bytes == 5 * 16**3
    for z, y, x in _corners(image.shape, 60, 1):  # far more chunks than slots: evictions
        win = cache.window("vol_a", "image", (z, y, x), (16, 16, 16))
        np.testing.assert_array_equal(win, image[z:z + 16, y:y + 16, x:x + 16])
        assert cache.cached_bytes <= 5 * 16**3
    # CLOCK keeps what is used again: a chunk read twice in a row decodes once
    before = cache.decoded_bytes
    for _ in range(3):
        cache.window("vol_a", "image", (0, 0, 0), (16, 16, 16))
    assert cache.decoded_bytes - before <= 16**3


def test_loader_workers_share_one_cache_budget(indexed):
    store, index = indexed
    loader = make_loader(store, index, "uniform", num_workers=2, samples_per_epoch=8,
                         cache_bytes=2**20)
    shared = loader.dataset.shared_cache
    assert shared is not None and shared.max_bytes <= 2**20
    batches = list(loader)
    assert sum(b["image"].shape[0] for b in batches) == 8
    assert 0 < shared.cached_bytes <= 2**20  # what the workers decoded, seen from here
    assert make_loader(store, index, "uniform", num_workers=0).dataset.shared_cache is None


def test_worker_batches_arrive_whole_in_one_buffer(indexed):
    """Batches from workers (packed into one shared buffer, see collate_patches) equal the
    batches of the main process: same keys, dtypes, shapes and values."""
    store, index = indexed
    kw = {"batch_size": 3, "seed": 5, "samples_per_epoch": 9}
    ref = list(make_loader(store, index, "balanced", num_workers=0, **kw))
    got = list(make_loader(store, index, "balanced", num_workers=2, **kw))
    assert len(got) == len(ref) == 3
    for a, b in zip(got, ref, strict=True):
        assert a.keys() == b.keys() and "_packed" not in a
        for k in b:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("normalize", ["zscore", "unit", "window:20,200"])
def test_stored_dtype_batches_normalised_on_the_device_equal_worker_batches(indexed,
                                                                            normalize):
    """normalize_on="device": uint8 images through the workers (a quarter of the bytes), the
    same float32 batches once to_device has normalised them; labels untouched."""
    store, index = indexed
    kw = {"batch_size": 3, "seed": 4, "samples_per_epoch": 9, "normalize": normalize}
    ref = list(make_loader(store, index, "balanced", num_workers=0, **kw))
    loader = make_loader(store, index, "balanced", num_workers=2, normalize_on="device", **kw)
    got = list(loader)
    assert len(got) == len(ref) == 3
    for a, b in zip(ref, got, strict=True):
        assert b["image"].dtype == torch.uint8 and b["image"].shape == a["image"].shape
        moved = loader.to_device(b, "cpu")
        assert moved["image"].dtype == torch.float32
        torch.testing.assert_close(moved["image"], a["image"], atol=2e-6, rtol=0)
        assert torch.equal(moved["label"], a["label"]) and torch.equal(moved["row"], a["row"])


def test_device_transform_runs_after_device_normalisation(indexed):
    store, index = indexed
    kw = {"batch_size": 2, "num_workers": 0, "seed": 1, "samples_per_epoch": 2}
    loader = make_loader(store, index, "uniform", normalize_on="device",
                         device_transform=lambda x, seeds: x * 0 + x.mean(), **kw)
    batch = loader.to_device(next(iter(loader)), "cpu")
    assert abs(float(batch["image"][0, 0, 0, 0, 0])) < 1e-5  # z-scored first: mean 0
    with pytest.raises(ValueError, match="normalize_on='device'"):
        make_loader(store, index, "uniform", device_transform=lambda x, s: x, **kw)
    with pytest.raises(ValueError, match="normalize_on must be one of workers, device"):
        make_loader(store, index, "uniform", normalize_on="gpu", **kw)
