"""Chunk shape and codec for the VolumeStore, and ingest throughput; prints JSON.

    python benchmarks/bench_store.py [--volumes 4] [--windows 60]

For each chunk side (32, 64, 128) and codec (blosc-lz4, zstd-1 = zarr's default) it measures,
on synthetic 320^3 volumes: write time, stored size, random 128^3 window reads per second from
one process (median of 3 rounds), the read amplification of those windows (bytes decoded / bytes
delivered) and a whole-volume decode. Then it times tools/ingest on the competition layout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from vesuvius_data import VolumeStore
from vesuvius_data.store.competition import ingest_competition
from vesuvius_data.synthetic import make_volume, write_competition_layout

PATCH = 128
CODECS = {"blosc-lz4": BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle"),
          "zstd-1": ZstdCodec(level=1)}


def _dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _window_reads(arr: zarr.Array, rng: np.random.Generator, n: int, chunk: int) -> dict:
    shape = np.array(arr.shape)
    rates, amp = [], []
    for _ in range(3):
        corners = [rng.integers(0, shape - PATCH + 1) for _ in range(n)]
        t = time.perf_counter()
        for c in corners:
            arr[c[0]:c[0] + PATCH, c[1]:c[1] + PATCH, c[2]:c[2] + PATCH]
        rates.append(n / (time.perf_counter() - t))
        for c in corners:
            touched = np.prod([(ci + PATCH - 1) // chunk - ci // chunk + 1 for ci in c])
            amp.append(touched * chunk**3 / PATCH**3)
    return {"windows_per_s": statistics.median(rates), "read_amplification": float(np.mean(amp))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--volumes", type=int, default=4)
    ap.add_argument("--windows", type=int, default=60)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        image, label = make_volume((320, 320, 320), seed=0)
        results = []
        for chunk in (32, 64, 128):
            for name, codec in CODECS.items():
                path = tmp / f"c{chunk}_{name}.zarr"
                t = time.perf_counter()
                arr = zarr.create_array(path, shape=image.shape, dtype=image.dtype,
                                        chunks=(chunk,) * 3, compressors=codec)
                arr[...] = image
                write_s = time.perf_counter() - t
                arr = zarr.open_array(path, mode="r")
                t = time.perf_counter()
                arr[...]
                decode_s = time.perf_counter() - t
                row = {"chunk": chunk, "codec": name, "write_s": write_s,
                       "mb_on_disk": _dir_size(path) / 1e6, "full_decode_s": decode_s}
                row |= _window_reads(arr, np.random.default_rng(0), args.windows, chunk)
                results.append(row)
        src = tmp / "competition"
        write_competition_layout(src, args.volumes, (320, 320, 320), seed=1)
        store = VolumeStore.create(tmp / "store.zarr")
        t = time.perf_counter()
        report = ingest_competition(src, store, workers=2, progress=False)
        ingest_s = time.perf_counter() - t
        print(json.dumps({
            "chunk_codec": results,
            "ingest": {"volumes": len(report.ingested), "shape": [320, 320, 320],
                       "workers": 2, "seconds": ingest_s,
                       "volumes_per_s": len(report.ingested) / ingest_s},
        }, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
