"""The run folder: what makes a folder hold a run, and how a run claims or resumes one.

A fresh run refuses a folder that holds a trained run (``last.pt`` or ``best.pt``) unless told
to overwrite it; a resumed run drops log lines written after its checkpoint, so nothing from
two runs, or from before and after a kill, ever mixes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from vesuvius_data._atomic import atomic_write

__all__ = ["RUN_MARKERS", "claim", "held_run", "keep_metrics_until"]

#: files whose presence means a folder holds a trained run (config and metrics alone do not:
#: a start killed before its first checkpoint lost nothing, and a fresh start may reuse it)
RUN_MARKERS = ("last.pt", "best.pt")


def held_run(out: Path) -> list[str]:
    """The files that make ``out`` hold a run that a fresh start would destroy."""
    return [name for name in RUN_MARKERS if (out / name).exists()]


def claim(out: Path, resume: str | None, overwrite: bool) -> list[str]:
    """The run files a fresh start will replace (only with ``overwrite``; else an error)."""
    held = held_run(out) if resume is None else []
    if held and not overwrite:
        raise FileExistsError(f"{out} holds a run ({', '.join(held)}); continue it with "
                              f"--resume {out}, or start afresh with --overwrite (deletes it)")
    return held


def keep_metrics_until(path: Path, last_epoch: int) -> None:
    """Drop records after the checkpoint's epoch (and a line torn by a kill), atomically, so a
    resumed run's log never holds an epoch twice."""
    kept = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("epoch", math.inf) <= last_epoch:
            kept.append(line + "\n")
    with atomic_write(path) as f:
        f.write("".join(kept).encode())
