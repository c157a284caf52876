"""Patch loading throughput and memory against what users would pick instead; prints JSON.

    python benchmarks/bench_loader.py [--volumes 4] [--patches 160] [--skip-memory]
                                      [--throughput-only]

All in one run, batch 2, 2 workers unless said otherwise:
- throughput at 128^3 and 64^3 patches on the same synthetic 320^3 volumes:
  - ours: ``make_loader`` (balanced strategy, index stride 32 so windows straddle chunks),
    patches/s and read amplification (bytes decoded / bytes delivered), with the default
    512 MiB shared chunk cache (which holds this small dataset) and with 32 MiB (which does
    not; 128^3 only);
  - ours delivering uint8 (``normalize_on="device"``: the GPU z-scores the batch), and the
    cost of that z-score if a CPU had to do it;
  - the in-memory limit: the same rows' windows sliced from numpy arrays already in RAM,
    z-scored by the same kernel (and not, for the uint8 limit), collated into one buffer, by
    the same 2 forked workers: what any loader of this machine can reach; and both in one
    process without workers (where the rest goes: assembling a window from cached chunks);
  - raw: random 128^3 windows (image + label) sliced from the same zarr arrays, one process;
  - torchio, tuned as its docs advise: ``tio.Queue`` + ``LabelSampler`` over *uncompressed*
    NIfTI, 8 samples per volume, ``SubjectsLoader``;
  - MONAI, tuned as its docs advise: ``CacheDataset`` (``copy_cache=False``) with foreground /
    background indices cached once (``FgBgToIndicesd``), ``RandCropByPosNegLabeld`` reading
    them, persistent workers (benchmark-only dependency: ``pip install monai``; skipped with a
    note when missing);
- memory: 64 volumes of 128^3, 64^3 patches, 2 and 8 workers, the shared chunk cache against
  the per-worker LRU it replaced (``cache_bytes`` each): patches/s, each worker's RSS and USS
  (memory only it holds) and the PSS of loader and workers together (what they really cost:
  shared pages are split between the processes that map them);
- four classes, int16: the same 320^3 volumes with int16 images (HU-like: value - 1000) and
  the surface split by depth into three classes (background + 3, ignore kept), 64^3 patches:
  ours (balanced with a share per class) beside ours on the binary uint8 volumes, torchio's
  ``LabelSampler`` with a probability per class and MONAI's ``RandCropByLabelClassesd`` with
  cached class indices (``ClassesToIndicesd``), on the same multi-class NIfTI files;
- strategies: microseconds per single draw at 10^6 rows.
Figures are medians of 3 rounds after a warm-up; startup (worker spawn, caching) is reported
apart.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from vesuvius_data import VolumeStore, build_index, make_loader
from vesuvius_data.index.patch_index import COUNT_COLUMNS, IndexParams, PatchIndex
from vesuvius_data.phantoms import DEPTH_CLASSES, split_surface_by_depth
from vesuvius_data.sampling import STRATEGIES, make_strategy
from vesuvius_data.synthetic import make_volume


def _rate(make_iter: Callable[[], Iterator[int]], n: int, rounds: int = 3) -> dict:
    """Patches/s over ``n`` patches per round; the first round includes startup."""
    rates, first = [], None
    it = make_iter()
    for r in range(rounds + 1):
        got, t = 0, time.perf_counter()
        while got < n:
            got += next(it)
        rate = got / (time.perf_counter() - t)
        if r == 0:
            first = rate
        else:
            rates.append(rate)
    return {"patches_per_s": statistics.median(rates), "first_round_patches_per_s": first}


def _memory() -> dict:
    """RSS / USS per worker (MB) and PSS of this process and its workers together (MB)."""
    import psutil

    me = psutil.Process()
    workers = me.children(recursive=True)
    info = [w.memory_full_info() for w in workers]
    mb = 1 / 2**20
    mine = me.memory_full_info().pss
    return {"workers": len(workers),
            "worker_rss_mb": statistics.median(i.rss * mb for i in info),
            "worker_uss_mb": statistics.median(i.uss * mb for i in info),
            "worker_pss_mb": statistics.median(i.pss * mb for i in info),
            "loader_process_pss_mb": mine * mb,
            "total_pss_mb": (mine + sum(i.pss for i in info)) * mb}


def _ours(store_path: Path, index: PatchIndex, n: int, cache_bytes: int = 512 * 2**20, *,
          workers: int = 2, shared: bool = True, memory: bool = False,
          normalize_on: str = "workers") -> dict:
    loader = make_loader(store_path, index, "balanced", batch_size=2, num_workers=workers,
                         seed=0, samples_per_epoch=10**7, cache_bytes=cache_bytes,
                         normalize_on=normalize_on)
    if not shared:  # the per-worker LRU of cache_bytes each, as before the shared cache
        loader.dataset.shared_cache = None
    patch_bytes = int(np.prod(index.params.patch_size)) * 2  # uint8 image + label
    stats = {"decoded": 0, "delivered": 0}

    def batches():
        for b in loader:
            stats["decoded"] += int(b["decoded_bytes"].sum())
            stats["delivered"] += b["image"].shape[0] * patch_bytes
            yield b["image"].shape[0]

    it = batches()
    out = _rate(lambda: it, n)
    out["read_amplification"] = stats["decoded"] / stats["delivered"]
    if memory:
        out |= _memory()
    it.close()
    if loader.loader._iterator is not None:  # persistent workers: stop them before the next
        loader.loader._iterator._shutdown_workers()
    return out


class _InMemoryWindows:
    """The physical limit of a loader: the same index rows' windows sliced from numpy arrays
    already in RAM (inherited by forked workers), z-scored by the same numba kernel (or not,
    for the stored-dtype path), collated into one shared buffer as ours does."""

    def __init__(self, volumes: dict[str, tuple[np.ndarray, np.ndarray]], index: PatchIndex,
                 normalize: bool) -> None:
        self.volumes, self.normalize = volumes, normalize
        self.ids, self.codes, self.corners = index.volume_ids, index.volume, index.corners
        self.P = index.params.patch_size[0]

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        import torch

        from vesuvius_data.normalize import _zscore

        row = item[0]
        image, label = self.volumes[self.ids[self.codes[row]]]
        z, y, x = self.corners[row]
        box = np.s_[z:z + self.P, y:y + self.P, x:x + self.P]
        img = _zscore(image[box]) if self.normalize else np.ascontiguousarray(image[box])
        return {"image": torch.from_numpy(img[None]),
                "label": torch.from_numpy(np.ascontiguousarray(label[box])[None])}


def _limit(volumes: dict, index: PatchIndex, n: int, normalize: bool = True) -> dict:
    """Patches/s of ``_InMemoryWindows`` under the same sampler, batch and worker count."""
    from torch.utils.data import DataLoader

    from vesuvius_data.loader import RowSampler, collate_patches, unpack_batch

    sampler = RowSampler(make_strategy("balanced", index), 10**7, seed=0, window=64)
    loader = DataLoader(_InMemoryWindows(volumes, index, normalize), batch_size=2,
                        sampler=sampler, num_workers=2, persistent_workers=True,
                        collate_fn=collate_patches, multiprocessing_context="fork")

    def batches():
        for b in map(unpack_batch, loader):
            yield b["image"].shape[0]

    return _rate(batches, n)


def _assembly(store_path: Path, volumes: dict, index: PatchIndex, n: int = 400) -> dict:
    """Where ours loses to the limit, without workers or IPC: uint8 items/s of our dataset
    (windows assembled from the shared cache's chunks) beside ``_InMemoryWindows`` (one
    slice of an in-RAM array), in this process, the cache warm."""
    loader = make_loader(store_path, index, "balanced", num_workers=2, seed=0,
                         samples_per_epoch=10**6, normalize_on="device")
    ours, limit = loader.dataset, _InMemoryWindows(volumes, index, normalize=False)
    rows = [int(r) for r in make_strategy("balanced", index).sample(np.random.default_rng(0), n)]

    def rate(dataset) -> float:
        t = time.perf_counter()
        for r in rows:
            dataset[(r, 0)]
        return n / (time.perf_counter() - t)

    rate(ours)  # warm the cache
    out = {"ours_items_per_s": statistics.median(rate(ours) for _ in range(3)),
           "in_memory_items_per_s": statistics.median(rate(limit) for _ in range(3))}
    return out | {"ratio": out["ours_items_per_s"] / out["in_memory_items_per_s"]}


def _raw(store: VolumeStore, index: PatchIndex, n: int) -> dict:
    P = index.params.patch_size[0]
    rng = np.random.default_rng(0)
    arrays = {(v, r): store.zarr_array(v, r) for v in store.ids() for r in ("image", "label")}
    corners = index.corners

    def windows():
        while True:
            row = int(rng.integers(len(index)))
            vid = index.volume_ids[index.volume[row]]
            z, y, x = corners[row]
            for role in ("image", "label"):
                arrays[(vid, role)][z:z + P, y:y + P, x:x + P]
            yield 1

    return _rate(windows, n)


def _torchio(nifti: list[tuple[Path, Path]], patch: int, n: int,
             classes: tuple[int, ...] = (0, 1)) -> dict:
    import torchio as tio

    subjects = [tio.Subject(image=tio.ScalarImage(i), label=tio.LabelMap(lab))
                for i, lab in nifti]
    sampler = tio.LabelSampler(patch, label_name="label",
                               label_probabilities=dict.fromkeys(classes, 1))
    queue = tio.Queue(tio.SubjectsDataset(subjects), max_length=64, samples_per_volume=8,
                      sampler=sampler, num_workers=2, verbose=False)
    loader = tio.SubjectsLoader(queue, batch_size=2)

    def batches():
        while True:
            for b in loader:
                yield b["image"][tio.DATA].shape[0]

    return _rate(batches, n)


def _monai_rate(nifti: list[tuple[Path, Path]], transforms, n: int) -> dict:
    """Patches/s of MONAI's cached dataset (``copy_cache=False``) with persistent workers."""
    from monai.data import CacheDataset, DataLoader

    data = [{"image": str(i), "label": str(lab)} for i, lab in nifti]
    ds = CacheDataset(data, transforms, cache_rate=1.0, num_workers=2, progress=False,
                      copy_cache=False)
    loader = DataLoader(ds, batch_size=1, num_workers=2, shuffle=True, persistent_workers=True)

    def batches():
        while True:
            for b in loader:
                yield b["image"].shape[0]

    return _rate(batches, n)


def _monai(nifti: list[tuple[Path, Path]], patch: int, n: int) -> dict:
    try:
        from monai.transforms import (
            Compose,
            EnsureChannelFirstd,
            FgBgToIndicesd,
            LoadImaged,
            RandCropByPosNegLabeld,
        )
    except ImportError:
        return {"skipped": "monai is not installed (pip install monai)"}
    keys = ["image", "label"]
    transforms = Compose([
        LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys),
        FgBgToIndicesd("label"),  # cached with the volumes: no per-crop scan of the label
        RandCropByPosNegLabeld(keys, label_key="label", spatial_size=(patch,) * 3, pos=1,
                               neg=1, num_samples=2, fg_indices_key="label_fg_indices",
                               bg_indices_key="label_bg_indices"),
    ])
    return _monai_rate(nifti, transforms, n)


def _monai_classes(nifti: list[tuple[Path, Path]], patch: int, n: int,
                   ratios: list[float]) -> dict:
    try:
        from monai.transforms import (
            ClassesToIndicesd,
            Compose,
            EnsureChannelFirstd,
            LoadImaged,
            RandCropByLabelClassesd,
        )
    except ImportError:
        return {"skipped": "monai is not installed (pip install monai)"}
    keys = ["image", "label"]
    transforms = Compose([
        LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys),
        ClassesToIndicesd("label", num_classes=len(ratios)),  # cached with the volumes
        RandCropByLabelClassesd(keys, label_key="label", spatial_size=(patch,) * 3,
                                ratios=ratios, num_classes=len(ratios), num_samples=2,
                                indices_key="label_cls_indices"),
    ])
    return _monai_rate(nifti, transforms, n)


def _multiclass_section(tmp: Path, volumes: int, n: int, binary_rate: float) -> dict:
    import nibabel as nib

    spec = DEPTH_CLASSES
    store = VolumeStore.create(tmp / "mc.zarr", label_spec=spec)
    nifti = []
    for i in range(volumes):
        image, label = make_volume((320, 320, 320), seed=i)
        image = (image.astype(np.int16) - 1000).astype(np.int16)
        label = split_surface_by_depth(label)
        store.add_volume(f"v{i}", image, label)
        paths = (tmp / f"mc{i}_image.nii", tmp / f"mc{i}_label.nii")
        for path, data in zip(paths, (image, label), strict=True):
            nib.save(nib.Nifti1Image(data, np.eye(4)), path)
        nifti.append(paths)
    index = build_index(store, 64, 32, progress=False)
    shares = {"top": 0.2, "middle": 0.2, "bottom": 0.2}
    loader = make_loader(tmp / "mc.zarr", index, "balanced", batch_size=2, num_workers=2,
                         seed=0, samples_per_epoch=10**7, class_shares=shares)

    def batches():
        for b in loader:
            yield b["image"].shape[0]

    out: dict = {"setup": {"classes": spec.describe(), "image_dtype": "int16", "patch": 64,
                           "class_shares": shares, "row_bytes": index.nbytes() / len(index)},
                 "ours_four_classes_int16": _rate(batches, n)}
    ours = out["ours_four_classes_int16"]["patches_per_s"]
    out["torchio_tuned"] = _torchio(nifti, 64, max(n // 4, 16), classes=(0, 1, 3, 4))
    out["monai_tuned"] = _monai_classes(nifti, 64, max(n // 2, 20), [1, 1, 0, 1, 1])
    out["ratios"] = {"four_classes_int16_over_binary_uint8": ours / binary_rate,
                     "ours_over_torchio": ours / out["torchio_tuned"]["patches_per_s"]}
    if "patches_per_s" in out["monai_tuned"]:
        out["ratios"]["ours_over_monai"] = ours / out["monai_tuned"]["patches_per_s"]
    return out


def _draw_speed() -> dict:
    """Microseconds per single draw, at 10^6 rows, for every strategy."""
    rng = np.random.default_rng(0)
    n = 10**6
    side = 100  # 100^3 grid corners
    g = np.stack(np.meshgrid(*[np.arange(side, dtype=np.uint16)] * 3, indexing="ij"))
    labeled = rng.integers(1, 2**21, n).astype(np.int32)
    cols = {"volume": np.zeros(n, np.uint16), "gz": g[0].ravel(), "gy": g[1].ravel(),
            "gx": g[2].ravel(), "labeled": labeled,
            "surface": (labeled * rng.random(n) * 0.3).astype(np.int32),
            "tissue": labeled, "boundary": np.zeros(n, np.int32)}
    tot = {c: int(cols[c].sum()) for c in COUNT_COLUMNS} | {"voxels": int(labeled.sum())}
    index = PatchIndex(cols, IndexParams((128,) * 3, (64,) * 3, __import__(
        "vesuvius_data").LabelSpec()), {"v": {"totals": tot}})
    out = {}
    for name in sorted(STRATEGIES):
        s = make_strategy(name, index)
        s.sample(rng, 10)
        t = time.perf_counter()
        for _ in range(20000):
            s.sample(rng, 1)
        single = (time.perf_counter() - t) / 20000 * 1e6
        t = time.perf_counter()
        s.sample(rng, 100_000)
        batched = (time.perf_counter() - t) / 100_000 * 1e6
        out[name] = {"us_per_single_draw": single, "us_per_draw_in_batch_of_1e5": batched}
    return out


def _device_normalisation_cost(patch: int) -> dict:
    """Milliseconds to z-score one uint8 batch of 2 with ``DeviceNormalizer`` here (CPU, one
    process): what the consumer pays when no GPU does it."""
    import torch

    from vesuvius_data.normalize import DeviceNormalizer

    x = torch.randint(0, 256, (2, 1, patch, patch, patch), dtype=torch.uint8)
    norm = DeviceNormalizer("zscore")
    norm(x)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        norm(x)
        times.append(time.perf_counter() - t)
    return {"ms_per_batch_on_this_cpu": statistics.median(times) * 1e3}


def _throughput(tmp: Path, store: VolumeStore, nifti: list, patch: int, n: int,
                volumes: dict) -> dict:
    index = build_index(store, patch, 32, progress=False)
    out: dict = {"setup": {"patch": patch, "index_stride": 32, "rows": len(index)},
                 "ours": _ours(tmp / "s.zarr", index, n),
                 "in_memory_limit": _limit(volumes, index, n),
                 "ours_uint8_normalised_on_device": _ours(tmp / "s.zarr", index, n,
                                                          normalize_on="device"),
                 "in_memory_limit_uint8": _limit(volumes, index, n, normalize=False),
                 "device_normalisation_if_on_cpu": _device_normalisation_cost(patch),
                 "one_process_uint8_assembly": _assembly(tmp / "s.zarr", volumes, index)}
    if patch == 128:
        # a cache far smaller than the data (2 x 131 MB here): what scroll scale looks like
        out["ours_cache_32mib"] = _ours(tmp / "s.zarr", index, n, 32 * 2**20)
        out["raw_zarr_windows_one_process"] = _raw(store, index, max(n // 4, 20))
    scale = (128 // patch) ** 3  # the anchors' rate grows less than ours with smaller patches
    out["torchio_tuned"] = _torchio(nifti, patch, max(n * min(scale, 4) // 8, 16))
    out["monai_tuned"] = _monai(nifti, patch, max(n * min(scale, 4) // 4, 20))
    ours = out["ours"]["patches_per_s"]
    uint8 = out["ours_uint8_normalised_on_device"]["patches_per_s"]
    out["ratios"] = {"ours_over_torchio": ours / out["torchio_tuned"]["patches_per_s"],
                     "ours_over_in_memory_limit": ours / out["in_memory_limit"]["patches_per_s"],
                     "ours_uint8_over_in_memory_limit_uint8":
                         uint8 / out["in_memory_limit_uint8"]["patches_per_s"],
                     "ours_uint8_over_ours_float32": uint8 / ours}
    if "patches_per_s" in out["monai_tuned"]:
        monai = out["monai_tuned"]["patches_per_s"]
        out["ratios"]["ours_over_monai"] = ours / monai
        out["ratios"]["ours_uint8_over_monai"] = uint8 / monai
    if "raw_zarr_windows_one_process" in out:
        out["ratios"]["ours_over_raw_reads"] = ours / out["raw_zarr_windows_one_process"][
            "patches_per_s"]
    return out


def _memory_section(tmp: Path, n: int) -> dict:
    import subprocess
    import sys

    store = VolumeStore.create(tmp / "many.zarr")
    for i in range(64):
        store.add_volume(f"m{i}", *make_volume((128,) * 3, seed=100 + i))
    build_index(store, 64, 32, progress=False).save(tmp / "many.index.npz")
    out: dict = {"setup": {"volumes": 64, "shape": [128] * 3, "patch": 64,
                           "decoded_data_mb": 64 * 2 * 128**3 / 2**20, "cache_mb": 512,
                           "note": "each loader runs in a fresh interpreter; PSS counts it and "
                                   "its workers, torch's own ~150 MB included"}}
    for workers in (2, 8):
        for shared in (True, False):
            name = f"{workers}_workers_{'shared' if shared else 'per_worker_lru'}"
            proc = subprocess.run(
                [sys.executable, __file__, "--memory-run", str(tmp / "many.zarr"),
                 str(tmp / "many.index.npz"), str(n), str(workers), str(int(shared))],
                capture_output=True, text=True, check=True)
            out[name] = json.loads(proc.stdout)
    return out


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--memory-run"]:  # one loader of the memory section, in its own interpreter
        store, index, n, workers, shared = argv[1:]
        print(json.dumps(_ours(Path(store), PatchIndex.load(index), int(n),
                               workers=int(workers), shared=shared == "1", memory=True)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--volumes", type=int, default=4)
    ap.add_argument("--patches", type=int, default=160, help="patches per timed round")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--throughput-only", action="store_true",
                    help="only the 128^3 and 64^3 throughput sections")
    args = ap.parse_args(argv)
    import nibabel as nib

    tmp = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    try:
        store = VolumeStore.create(tmp / "s.zarr")
        nifti, volumes = [], {}
        for i in range(args.volumes):
            image, label = make_volume((320, 320, 320), seed=i)
            store.add_volume(f"v{i}", image, label)
            volumes[f"v{i}"] = (image, label)
            paths = (tmp / f"v{i}_image.nii", tmp / f"v{i}_label.nii")  # uncompressed: faster
            for path, data in zip(paths, (image, label), strict=True):
                nib.save(nib.Nifti1Image(data, np.eye(4)), path)
            nifti.append(paths)
        results: dict = {"setup": {"volumes": args.volumes, "shape": [320] * 3,
                                   "batch_size": 2, "workers": 2}}
        for patch in (128, 64):
            results[f"patch_{patch}"] = _throughput(tmp, store, nifti, patch,
                                                    args.patches * (128 // patch), volumes)
        if not args.throughput_only:
            results["four_classes_int16"] = _multiclass_section(
                tmp, args.volumes, args.patches * 2,
                results["patch_64"]["ours"]["patches_per_s"])
            if not args.skip_memory:
                results["memory_64_volumes"] = _memory_section(tmp, args.patches * 2)
            results["strategy_draws_at_1e6_rows"] = _draw_speed()
        print(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
