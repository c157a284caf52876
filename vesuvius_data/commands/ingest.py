"""Ingest the competition layout (train.csv, train_images/, train_labels/) into a VolumeStore.

    vesuvius-ingest SRC STORE [--workers N] [--overwrite] [--ids ID ...]

Resumable: rerun it after a crash and it skips finished volumes and redoes a half-written one.
Ends with the label census per scroll; exit status 1 when any volume failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vesuvius_data.cli import positive_int, user_errors
from vesuvius_data.store import VolumeStore
from vesuvius_data.store.census import census_by_scroll, format_census_table
from vesuvius_data.store.competition import ingest_competition, scan_competition


def _list(ids: list[str], n: int = 10) -> str:
    return ", ".join(ids[:n]) + (f", ... ({len(ids)} in all)" if len(ids) > n else "")


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path,
                        help="folder with train.csv, train_images/, train_labels/")
    parser.add_argument("store", type=Path, help="VolumeStore folder (created when missing)")
    parser.add_argument("--workers", type=positive_int, default=2,
                        help="volumes ingested in parallel")
    parser.add_argument("--overwrite", action="store_true", help="re-ingest complete volumes too")
    parser.add_argument("--ids", nargs="+", default=None,
                        help="only these volumes (with --overwrite: repair damaged ones)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    scan_competition(args.src)  # a bad source fails here, before a store is created
    if args.store.exists() and any(args.store.iterdir()):
        store = VolumeStore.open(args.store, mode="a")
    else:
        store = VolumeStore.create(args.store)
    t0 = time.perf_counter()
    report = ingest_competition(args.src, store, workers=args.workers,
                                overwrite=args.overwrite, ids=args.ids,
                                progress=not args.quiet)
    dt = time.perf_counter() - t0
    if report.missing:
        print(f"warning: {len(report.missing)} ids in train.csv have no files: "
              f"{_list(report.missing)}", file=sys.stderr)
    if report.unlisted:
        print(f"warning: {len(report.unlisted)} files have no train.csv row and were skipped: "
              f"{_list(report.unlisted)}", file=sys.stderr)
    print(f"ingested {len(report.ingested)} volumes in {dt:.1f} s"
          + (f" ({len(report.ingested) / dt:.2f} vol/s)" if report.ingested else "")
          + f", skipped {len(report.skipped)} already complete, {len(report.failed)} failed")
    for _, msg in sorted(report.failed.items()):
        print(f"error: {msg}", file=sys.stderr)
    print(f"\nlabel census of {store.location} (class shares must use labeled voxels):")
    print(format_census_table(census_by_scroll(store)))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
