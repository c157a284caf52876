"""Shared fixtures: tiny synthetic volumes and stores (64^3 at most)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr.storage

from vesuvius_data import VolumeStore
from vesuvius_data.synthetic import make_volume


def sheet_mask(shape=(40, 48, 48), z=10, thickness=2, tilt=0.0):
    """A sheet across the whole volume, normal to axis 0, rising ``tilt`` voxels per row."""
    m = np.zeros(shape, bool)
    for y in range(shape[1]):
        lo = z + int(round(tilt * y))
        m[lo:lo + thickness, y, :] = True
    return m


@pytest.fixture(scope="session")
def small_pair() -> tuple[np.ndarray, np.ndarray]:
    """A 48x56x64 synthetic (image, label) pair: non-cubic so axis mix-ups show."""
    return make_volume((48, 56, 64), seed=3)


@pytest.fixture
def store(tmp_path, small_pair) -> VolumeStore:
    """A local store with two small volumes of two scrolls."""
    s = VolumeStore.create(tmp_path / "store.zarr", chunks=(16, 16, 16))
    image, label = small_pair
    s.add_volume("vol_a", image, label, scroll_id="s1")
    img_b, lab_b = make_volume((32, 40, 48), seed=4)
    s.add_volume("vol_b", img_b, lab_b, scroll_id="s2")
    return s


class CountingStore(zarr.storage.WrapperStore):
    """Counts reads of chunk keys (zarr v3 chunk keys contain '/c/')."""

    def __init__(self, store):
        super().__init__(store)
        self.chunk_reads: list[str] = []

    async def get(self, key, prototype, byte_range=None):
        if "/c/" in key:
            self.chunk_reads.append(key)
        return await self._store.get(key, prototype, byte_range)

    def volumes_read(self, role: str = "label") -> set[str]:
        return {k.split("/")[1] for k in self.chunk_reads if f"/{role}/c/" in k}
