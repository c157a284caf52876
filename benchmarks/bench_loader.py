"""Patch loading throughput against what users would pick instead; prints JSON.

    python benchmarks/bench_loader.py [--volumes 4] [--patches 160]

All in one run, on the same synthetic 320^3 volumes, 128^3 patches, batch 2, 2 workers:
- ours: ``make_loader`` (balanced strategy, index stride 32 so windows straddle chunks),
  patches/s and read amplification (bytes decoded / bytes delivered), with the default chunk
  cache (which holds this small dataset) and with 32 MiB per worker (which does not);
- raw: random 128^3 windows (image + label) sliced from the same zarr arrays, one process;
- torchio: ``tio.Queue`` + ``LabelSampler`` over NIfTI files, ``SubjectsLoader``;
- MONAI: ``CacheDataset`` + ``RandCropByPosNegLabeld`` over the same NIfTI files (benchmark-only
  dependency: ``pip install monai``; skipped with a note when missing);
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
from vesuvius_data.sampling import STRATEGIES, make_strategy
from vesuvius_data.synthetic import make_volume

P = 128


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


def _ours(store_path: Path, index: PatchIndex, n: int, cache_bytes: int = 512 * 2**20
          ) -> dict:
    loader = make_loader(store_path, index, "balanced", batch_size=2, num_workers=2, seed=0,
                         samples_per_epoch=10**7, cache_bytes=cache_bytes)
    stats = {"decoded": 0, "delivered": 0}

    def batches():
        for b in loader:
            stats["decoded"] += int(b["decoded_bytes"].sum())
            stats["delivered"] += b["image"].shape[0] * (P**3 * 2)  # uint8 image + label
            yield b["image"].shape[0]

    out = _rate(batches, n)
    out["read_amplification"] = stats["decoded"] / stats["delivered"]
    return out


def _raw(store: VolumeStore, index: PatchIndex, n: int) -> dict:
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


def _torchio(nifti: list[tuple[Path, Path]], n: int) -> dict:
    import torchio as tio

    subjects = [tio.Subject(image=tio.ScalarImage(i), label=tio.LabelMap(lab))
                for i, lab in nifti]
    sampler = tio.LabelSampler(P, label_name="label", label_probabilities={0: 1, 1: 1})
    queue = tio.Queue(tio.SubjectsDataset(subjects), max_length=16, samples_per_volume=4,
                      sampler=sampler, num_workers=2, verbose=False)
    loader = tio.SubjectsLoader(queue, batch_size=2)

    def batches():
        while True:
            for b in loader:
                yield b["image"][tio.DATA].shape[0]

    return _rate(batches, n)


def _monai(nifti: list[tuple[Path, Path]], n: int) -> dict:
    try:
        from monai.data import CacheDataset, DataLoader
        from monai.transforms import (
            Compose,
            EnsureChannelFirstd,
            LoadImaged,
            RandCropByPosNegLabeld,
        )
    except ImportError:
        return {"skipped": "monai is not installed (pip install monai)"}
    keys = ["image", "label"]
    transforms = Compose([
        LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys),
        RandCropByPosNegLabeld(keys, label_key="label", spatial_size=(P, P, P), pos=1, neg=1,
                               num_samples=2),
    ])
    data = [{"image": str(i), "label": str(lab)} for i, lab in nifti]
    ds = CacheDataset(data, transforms, cache_rate=1.0, num_workers=2, progress=False)
    loader = DataLoader(ds, batch_size=1, num_workers=2, shuffle=True)

    def batches():
        while True:
            for b in loader:
                yield b["image"].shape[0]

    return _rate(batches, n)


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--volumes", type=int, default=4)
    ap.add_argument("--patches", type=int, default=160, help="patches per timed round")
    args = ap.parse_args(argv)
    import nibabel as nib

    tmp = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    try:
        store = VolumeStore.create(tmp / "s.zarr")
        nifti = []
        for i in range(args.volumes):
            image, label = make_volume((320, 320, 320), seed=i)
            store.add_volume(f"v{i}", image, label)
            paths = (tmp / f"v{i}_image.nii.gz", tmp / f"v{i}_label.nii.gz")
            for path, data in zip(paths, (image, label), strict=True):
                nib.save(nib.Nifti1Image(data, np.eye(4)), path)
            nifti.append(paths)
        index = build_index(store, P, 32, progress=False)
        results = {
            "setup": {"volumes": args.volumes, "shape": [320] * 3, "patch": P,
                      "index_stride": 32, "rows": len(index), "batch_size": 2, "workers": 2},
            "ours": _ours(tmp / "s.zarr", index, args.patches),
            # a cache far smaller than the data (2 x 131 MB here): what scroll scale looks like
            "ours_cache_32mib_per_worker": _ours(tmp / "s.zarr", index, args.patches, 32 * 2**20),
            "raw_zarr_windows_one_process": _raw(store, index, max(args.patches // 4, 20)),
            "torchio_queue_labelsampler": _torchio(nifti, max(args.patches // 8, 16)),
            "monai_cachedataset_randcropbyposneg": _monai(nifti, max(args.patches // 4, 20)),
        }
        ours = results["ours"]["patches_per_s"]
        results["ratios"] = {
            "ours_over_torchio": ours / results["torchio_queue_labelsampler"]["patches_per_s"],
            "ours_over_raw_reads": ours / results["raw_zarr_windows_one_process"][
                "patches_per_s"],
        }
        monai = results["monai_cachedataset_randcropbyposneg"]
        if "patches_per_s" in monai:
            results["ratios"]["ours_over_monai"] = ours / monai["patches_per_s"]
        results["strategy_draws_at_1e6_rows"] = _draw_speed()
        print(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
