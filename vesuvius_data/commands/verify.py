"""Check a VolumeStore's chunks against what was recorded when they were written.

    vesuvius-verify STORE [--deep] [--ids v0 v1 ...] [--json]

Lists every missing, resized or unexpected chunk by volume, array and chunk key; --deep also
compares each chunk's CRC-32 and decodes it (reads the whole store). Exit status 0 when the
store is intact, 1 when anything is damaged (with how to repair each volume), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

from vesuvius_data.cli import user_errors
from vesuvius_data.store import VolumeStore


@user_errors
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("store", help="VolumeStore folder or URL")
    ap.add_argument("--deep", action="store_true", help="checksum and decode every chunk")
    ap.add_argument("--ids", nargs="+", default=None, help="only these volumes")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    store = VolumeStore.open(args.store)
    t0 = time.perf_counter()
    report = store.verify(args.ids, deep=args.deep, progress=not args.json)
    seconds = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"ok": report.ok, "volumes": report.volumes, "chunks": report.chunks,
                          "deep": args.deep, "seconds": seconds,
                          "problems": [asdict(p) for p in report.problems],
                          "damaged_volumes": report.damaged_volumes(),
                          "unrecorded": report.unrecorded, "repair": report.repair}))
        return 0 if report.ok else 1
    for p in report.problems:
        print(f"damaged: {p}")
    if report.unrecorded:
        print(f"note: {len(report.unrecorded)} arrays have no chunk record (written by an older "
              f"version, or registered from elsewhere): a missing chunk there cannot be told "
              f"from an empty one; --deep still decodes them ({', '.join(report.unrecorded[:4])}"
              + (", ..." if len(report.unrecorded) > 4 else "") + ")")
    kind = "deep check (checksums, decoding)" if args.deep else "check (presence and sizes)"
    print(f"{kind} of {report.chunks} chunks in {report.volumes} volumes of {store.location} "
          f"in {seconds:.1f} s: " + ("intact" if report.ok else
                                     f"{len(report.problems)} damaged chunks in "
                                     f"{len(report.damaged_volumes())} volumes"))
    for vid in report.damaged_volumes():
        print(f"repair {vid}: {report.repair[vid]}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
