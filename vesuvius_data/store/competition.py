"""The Vesuvius Challenge layout on disk, and its ingest into a VolumeStore.

Layout: ``train.csv`` (columns ``id``, ``scroll_id``), ``train_images/{id}.tif`` and
``train_labels/{id}.tif``: multi-page uint8 TIFF stacks, LZW-compressed. The real CSV lists more
ids than there are file pairs (806 rows, 786 pairs), so ids without files are a warning, while a
file pair that is broken (one half missing, unreadable, mismatched) is an error naming the file.
"""

from __future__ import annotations

import csv
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .volume_store import VolumeStore

__all__ = ["CompetitionEntry", "IngestReport", "scan_competition", "read_tif",
           "ingest_competition"]


@dataclass(frozen=True)
class CompetitionEntry:
    volume_id: str
    scroll_id: str | None
    image_path: Path
    label_path: Path


@dataclass
class IngestReport:
    ingested: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already complete in the store
    failed: dict[str, str] = field(default_factory=dict)  # id -> error message
    missing: list[str] = field(default_factory=list)  # in train.csv, no files at all
    unlisted: list[str] = field(default_factory=list)  # files, no train.csv row


def scan_competition(src: str | os.PathLike[str]) -> tuple[list[CompetitionEntry], IngestReport]:
    """Pair up ``train.csv`` rows with their image/label files.

    Returns the complete entries, and a report holding the ids that cannot be ingested:
    ``missing`` (no files), ``failed`` (one of the pair missing), ``unlisted`` (not in the CSV).
    """
    root = Path(src)
    csv_path = root / "train.csv"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory (expected the competition layout: "
                                "train.csv, train_images/, train_labels/)")
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: missing (expected columns id,scroll_id)")
    for sub in ("train_images", "train_labels"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"{root / sub}: missing folder")
    try:
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "id" not in reader.fieldnames:
                raise ValueError(f"{csv_path}: needs an 'id' column, has {reader.fieldnames}")
            rows = [(str(r["id"] or "").strip(), (r.get("scroll_id") or "").strip() or None)
                    for r in reader]
    except (UnicodeDecodeError, csv.Error, AttributeError) as e:  # not text, or not a table
        raise ValueError(f"{csv_path}: unreadable CSV ({type(e).__name__}: {e})") from None
    images = {p.stem: p for p in (root / "train_images").glob("*.tif")}
    labels = {p.stem: p for p in (root / "train_labels").glob("*.tif")}
    report = IngestReport()
    entries = []
    listed = set()
    for vid, scroll in rows:
        listed.add(vid)
        img, lab = images.get(vid), labels.get(vid)
        if img is None and lab is None:
            report.missing.append(vid)
        elif lab is None:
            report.failed[vid] = (f"{img}: no label file for this image "
                                  f"(expected {root / 'train_labels' / (vid + '.tif')})")
        elif img is None:
            report.failed[vid] = (f"{lab}: no image file for this label "
                                  f"(expected {root / 'train_images' / (vid + '.tif')})")
        else:
            entries.append(CompetitionEntry(vid, scroll, img, lab))
    report.unlisted = sorted((set(images) | set(labels)) - listed)
    return entries, report


class _ThreadWarnings(logging.Handler):
    """Collects this thread's warnings from tifffile's logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


def read_tif(path: str | os.PathLike[str], data: bytes | None = None) -> np.ndarray:
    """Read a TIFF stack as a (z, y, x) array; errors name the file.

    ``data`` holds the file's bytes when it does not live on disk (a zip member; ``path`` then
    names it in messages). tifffile reads a truncated or corrupt file with only a logged warning
    (returning fewer pages, or nothing); here any such warning is an error, so a damaged file
    never enters a store, or a score, looking like a smaller volume.
    """
    import io

    import tifffile

    collect = _ThreadWarnings()
    logger = logging.getLogger("tifffile")
    logger.addHandler(collect)
    try:
        out = tifffile.imread(path if data is None else io.BytesIO(data))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except Exception as e:  # tifffile raises many types for corrupt files
        raise ValueError(f"{path}: unreadable TIFF ({type(e).__name__}: {e})") from e
    finally:
        logger.removeHandler(collect)
    if collect.messages:
        raise ValueError(f"{path}: unreadable TIFF (truncated or corrupt: "
                         f"{collect.messages[0]})")
    if out.size == 0:
        raise ValueError(f"{path}: unreadable TIFF (no image data)")
    return out


def _ingest_one(store: VolumeStore, e: CompetitionEntry, overwrite: bool) -> None:
    image, label = read_tif(e.image_path), read_tif(e.label_path)
    for path, data in ((e.image_path, image), (e.label_path, label)):
        if data.ndim != 3:
            raise ValueError(f"{path}: expected a 3-D stack (z, y, x), got shape {data.shape}")
    if image.shape != label.shape:
        raise ValueError(f"{e.label_path}: shape {label.shape} differs from its image "
                         f"{e.image_path} {image.shape}")
    try:
        store.add_volume(e.volume_id, image, label, e.scroll_id, source=str(e.image_path),
                         overwrite=overwrite)
    except ValueError as err:  # name the file the problem is in
        path = e.label_path if ": label" in str(err) else e.image_path
        raise ValueError(f"{path}: {err}") from err


def ingest_competition(
    src: str | os.PathLike[str],
    store: VolumeStore,
    *,
    workers: int = 2,
    overwrite: bool = False,
    ids: list[str] | None = None,
    progress: bool = True,
    on_done: Callable[[str], None] | None = None,
) -> IngestReport:
    """Copy every complete file pair of the competition layout at ``src`` into ``store``.

    Resumable: volumes already complete in the store are skipped (unless ``overwrite``), and a
    volume whose write was interrupted is not in the store's manifest, so it is redone. Runs
    ``workers`` threads (TIFF decoding and zarr encoding release the GIL). One bad volume does
    not stop the others: its error lands in ``report.failed``. ``ids`` limits the work to
    those volumes (e.g. to re-ingest a damaged one with ``overwrite``).
    """
    from tqdm.auto import tqdm

    entries, report = scan_competition(src)
    if ids is not None:
        unknown = sorted(set(ids) - {e.volume_id for e in entries})
        if unknown:
            raise ValueError(f"{src}: no image/label pair for id(s) {unknown[:10]}")
        entries = [e for e in entries if e.volume_id in set(ids)]
        report.missing, report.unlisted = [], []
    todo = []
    for e in entries:
        if e.volume_id in store and not overwrite:
            report.skipped.append(e.volume_id)
        else:
            todo.append(e)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, tqdm(
        total=len(todo), desc="ingest", unit="vol", disable=None if progress else True
    ) as bar:
        futures = {pool.submit(_ingest_one, store, e, overwrite): e for e in todo}
        for fut in as_completed(futures):
            e = futures[fut]
            try:
                fut.result()
                report.ingested.append(e.volume_id)
                if on_done:
                    on_done(e.volume_id)
            except (ValueError, FileNotFoundError, FileExistsError) as err:
                report.failed[e.volume_id] = str(err)
            bar.update()
    report.ingested.sort()
    return report
