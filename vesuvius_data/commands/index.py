"""Build (or update) the patch index of a VolumeStore and print what it says about the data.

    vesuvius-index STORE --patch-size 128 [--stride 64] [--out PATH]
                          [--workers N | --scheduler ADDRESS] [--report report.png] [--json]

With an existing index at --out, only new or rewritten volumes are read again; removed ones are
dropped. The index file is replaced atomically: a killed run leaves the old file or the new one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from vesuvius_data.cli import positive_int, user_errors
from vesuvius_data.index.build import DEFAULT_BLOCK, SmallVolumeWarning, build_index
from vesuvius_data.index.patch_index import PatchIndex, default_index_path, default_stride
from vesuvius_data.index.report import format_summary, summarize, write_report_png
from vesuvius_data.store import VolumeStore


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("store", help="VolumeStore folder or URL")
    p.add_argument("--patch-size", "--patch_size", type=positive_int, required=True,
                   help="patch side P (voxels)")
    p.add_argument("--stride", type=positive_int, default=None, help="grid step S, divides P "
                   "(default P/2)")
    p.add_argument("--out", type=Path, default=None, help="index file (default: beside the "
                   "store, STORE.index_pP_sS.npz)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--workers", type=positive_int, default=None,
                       help="start a local Dask cluster with N worker processes "
                       "(default: threads in this process)")
    group.add_argument("--scheduler", default=None,
                       help="address of a Dask distributed scheduler, tcp://host:port")
    p.add_argument("--air-threshold", type=int, default=0,
                   help="image values above it count as tissue (default 0)")
    p.add_argument("--block", type=positive_int, default=DEFAULT_BLOCK[0],
                   help="task block side in voxels (default %(default)s)")
    p.add_argument("--rebuild", action="store_true", help="ignore an existing index")
    p.add_argument("--strict", action="store_true",
                   help="a volume smaller than the patch is an error, not a warning")
    p.add_argument("--report", type=Path, default=None, help="write a PNG report here")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stride = args.stride or default_stride(args.patch_size)
    out = args.out or default_index_path(args.store, args.patch_size, stride)
    client = cluster = None
    try:
        store = VolumeStore.open(args.store)
        previous = None
        if out.exists() and not args.rebuild:
            try:
                previous = PatchIndex.load(out)
            except ValueError as e:
                print(f"warning: ignoring unreadable index {out}: {e}", file=sys.stderr)
        if args.scheduler or args.workers:
            from distributed import Client, LocalCluster

            if args.scheduler:
                client = Client(args.scheduler)
            else:
                cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                       processes=True, dashboard_address=None)
                client = Client(cluster)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SmallVolumeWarning)
            index = build_index(store, args.patch_size, stride, air_threshold=args.air_threshold,
                                previous=previous, block=(args.block,) * 3, client=client,
                                strict=args.strict, progress=not (args.quiet or args.json))
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        seconds = time.perf_counter() - t0
        index.save(out)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    summary = summarize(index) | {"index_path": str(out), "seconds": seconds}
    if args.report:
        write_report_png(index, args.report)
        summary["report"] = str(args.report)
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_summary(summary))
        print(f"saved {out} in {seconds:.1f} s" + (f"; report {args.report}" if args.report
                                                  else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
