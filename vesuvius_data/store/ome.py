"""Arrays to register by URL: a zarr array, a path or URL of one, or an OME-Zarr multiscale
group resolved to one of its levels."""

from __future__ import annotations

from pathlib import Path

import zarr
import zarr.storage

from .volume_info import is_url

__all__ = ["array_url"]


def array_url(arr: zarr.Array | str, level: int | None) -> str:
    """A URL that reopens ``arr``; resolves OME-Zarr multiscale groups to one level."""
    if isinstance(arr, zarr.Array):
        store = arr.store
        if isinstance(store, zarr.storage.LocalStore):
            return str(Path(store.root) / arr.path)
        if isinstance(store, zarr.storage.FsspecStore):
            return store.fs.unstrip_protocol(f"{store.path}/{arr.path}".rstrip("/"))
        raise ValueError(f"cannot register an array held in {type(store).__name__}: "
                         "register arrays from a local folder or a URL")
    url = str(arr) if is_url(str(arr)) else str(Path(arr).resolve())
    node = zarr.open(url, mode="r")
    if isinstance(node, zarr.Array):
        if level not in (None, 0):
            raise ValueError(f"{url} is an array, not an OME-Zarr multiscale group; "
                             "level does not apply")
        return url
    ms = node.attrs.get("multiscales") or (node.attrs.get("ome") or {}).get("multiscales")
    if not ms:
        raise ValueError(f"{url} is a group without OME-Zarr 'multiscales' metadata; "
                         "pass the array's path instead")
    datasets = ms[0]["datasets"]
    lvl = 0 if level is None else level
    if not 0 <= lvl < len(datasets):
        raise ValueError(f"{url}: level {lvl} out of range (has {len(datasets)} levels)")
    return url.rstrip("/") + "/" + datasets[lvl]["path"]
