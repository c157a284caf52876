"""Index-build speed and memory; prints JSON.

    python benchmarks/bench_index.py [--volumes 4] [--repeats 5]

1. Kernel: cell counts of decoded 128^3 blocks (stride 64) in voxels/s on one core, beside the
   numpy reshape-and-sum reference of the same counts (surface, labeled, tissue, boundary with
   its 6-neighbour test) in the same run. Medians of ``repeats``.
2. End to end: build_index over N synthetic 320^3 volumes in a store (patch 128, stride 64,
   local threads) beside merely reading (decoding) the same label arrays, both through zarr in
   one call per volume and through dask; and peak RSS growth of the build.
3. Four classes: the same volumes with their surface split into three classes by depth
   (background + 3 classes, ignore kept), built with a multi-class spec beside the binary
   build of the same label geometry; kernel rate too; row sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from vesuvius_data import VolumeStore, build_index
from vesuvius_data.index._kernels import count_cells
from vesuvius_data.index.build import DEFAULT_BLOCK, sources_from_store
from vesuvius_data.phantoms import DEPTH_CLASSES, split_surface_by_depth
from vesuvius_data.synthetic import make_volume


def _numpy_reference(label, image, stride, fg=1, bg=0, ignore=2, air=0):
    n = [d // s for d, s in zip(label.shape, stride, strict=True)]
    is_bg = np.pad(label == bg, 1)
    touch = (is_bg[:-2, 1:-1, 1:-1] | is_bg[2:, 1:-1, 1:-1] | is_bg[1:-1, :-2, 1:-1]
             | is_bg[1:-1, 2:, 1:-1] | is_bg[1:-1, 1:-1, :-2] | is_bg[1:-1, 1:-1, 2:])
    is_fg = label == fg

    def cells(m):
        return m.reshape(n[0], stride[0], n[1], stride[1], n[2], stride[2]).sum(axis=(1, 3, 5))

    return cells(is_fg), cells(label != ignore), cells(image > air), cells(is_fg & touch)


def _median_rate(fn, voxels, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return voxels / statistics.median(times)


def _peak_rss_during(fn):
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak, done = [base], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    t = threading.Thread(target=watch)
    t.start()
    try:
        out = fn()
    finally:
        done.set()
        t.join()
    return out, peak[0] - base


def _four_classes(tmp: Path, n: int, repeats: int) -> dict:
    """Binary vs 4-class builds of the same label geometry (labels only; medians)."""
    binary = VolumeStore.create(tmp / "binary.zarr")
    spec = DEPTH_CLASSES
    four = VolumeStore.create(tmp / "four.zarr", label_spec=spec)
    for i in range(n):
        image, label = make_volume((320, 320, 320), seed=i)
        binary.add_volume(f"v{i}", image, label)
        four.add_volume(f"v{i}", image, split_surface_by_depth(label))
    times: dict[str, list[float]] = {"binary": [], "four": []}
    sizes = {}
    for store in (binary, four):
        build_index(store, 128, 64, progress=False)  # warm
    for _ in range(repeats):
        for name, store in (("binary", binary), ("four", four)):
            t = time.perf_counter()
            index = build_index(store, 128, 64, progress=False)
            times[name].append(time.perf_counter() - t)
            sizes[name] = index.nbytes() / len(index)
    _, label = make_volume((128, 128, 128), seed=0)
    split = split_surface_by_depth(label)
    rates = {
        "binary": _median_rate(lambda: count_cells(label, None, origin=(0, 0, 0),
                                                   stride=(64,) * 3), label.size, repeats),
        "four": _median_rate(lambda: count_cells(split, None, origin=(0, 0, 0),
                                                 stride=(64,) * 3, ignore=2,
                                                 classes=(1, 3, 4)), label.size, repeats)}
    b, f = statistics.median(times["binary"]), statistics.median(times["four"])
    return {"volumes": n, "build_binary_s": b, "build_four_classes_s": f,
            "four_over_binary": f / b, "row_bytes_binary": sizes["binary"],
            "row_bytes_four_classes": sizes["four"],
            "kernel_voxels_per_s_binary": rates["binary"],
            "kernel_voxels_per_s_four_classes": rates["four"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--volumes", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    image, label = make_volume((128, 128, 128), seed=0)
    stride = (64, 64, 64)
    kernel = _median_rate(lambda: count_cells(label, image, origin=(0, 0, 0), stride=stride),
                          label.size, args.repeats)
    reference = _median_rate(lambda: _numpy_reference(label, image, stride), label.size,
                             args.repeats)
    _, counts, _ = count_cells(label, image, origin=(0, 0, 0), stride=stride)
    ref = _numpy_reference(label, image, stride)
    assert all(np.array_equal(counts[i], ref[i]) for i in range(4)), "kernel != reference"

    tmp = Path(tempfile.mkdtemp(prefix="bench_index_"))
    try:
        store = VolumeStore.create(tmp / "s.zarr")
        for i in range(args.volumes):
            store.add_volume(f"v{i}", *make_volume((320, 320, 320), seed=i))
        ids = store.ids()
        build_index(store, 128, 64, progress=False)  # warm: numba cache, imports
        labels_only = [dataclasses.replace(s, image=None)
                       for s in sources_from_store(store, block=DEFAULT_BLOCK)]
        builds, label_builds, zarr_reads, dask_reads = [], [], [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            build_index(store, 128, 64, progress=False)
            builds.append(time.perf_counter() - t)
            t = time.perf_counter()
            build_index(labels_only, 128, 64, progress=False)
            label_builds.append(time.perf_counter() - t)
            t = time.perf_counter()
            for v in ids:
                store.zarr_array(v, "label")[...]
            zarr_reads.append(time.perf_counter() - t)
            t = time.perf_counter()
            for v in ids:
                store.label(v, (128, 128, 128)).compute(scheduler="threads")
            dask_reads.append(time.perf_counter() - t)
        _, rss = _peak_rss_during(lambda: build_index(store, 128, 64, progress=False))
        index = build_index(store, 128, 64, progress=False)
        four = _four_classes(tmp, args.volumes, args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    build, lbuild, zread, dread = map(statistics.median,
                                      (builds, label_builds, zarr_reads, dask_reads))
    print(json.dumps({
        "kernel": {"voxels_per_s_one_core": kernel, "numpy_reference_voxels_per_s": reference,
                   "ratio_vs_numpy": kernel / reference},
        "end_to_end": {
            "volumes": args.volumes, "shape": [320, 320, 320], "patch": 128, "stride": 64,
            "rows": len(index), "build_s": build, "label_read_zarr_s": zread,
            "label_read_dask_s": dread, "build_over_zarr_read": build / zread,
            "build_over_dask_read": build / dread, "peak_rss_growth_mb": rss / 1e6,
            "labels_only_build_s": lbuild, "labels_only_build_over_zarr_read": lbuild / zread,
            "note": "build_s also reads and counts the images (tissue column); "
                    "labels_only_build_s indexes without images, like the reads",
        },
        "four_classes": four,
        "scroll_scale_estimate": {"voxels": 1e12, "rows": (10_000 // 64) ** 3,
                                  "bytes": (10_000 // 64) ** 3 * index.nbytes() / len(index)},
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
