"""Any registered strategy as a torchio ``PatchSampler``, for ``tio.Queue`` users.

The sampler indexes each subject's label map once (the same numba kernels as
``vesuvius-index``), caches the strategy by the label's content hash (``tio.SubjectsDataset``
hands out a fresh copy of a subject on every visit, so identity would not do; hashing costs
~1 ms per 128^3), lets the strategy draw rows,
and crops patches the torchio way, so the location travels with each patch
(``patch[tio.LOCATION]``).

Example:
    >>> sampler = StrategySampler(64, "balanced", fg_share=0.5)
    >>> queue = tio.Queue(subjects_dataset, 32, 8, sampler)       # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Generator
from typing import Any

import dask.array as da
import numpy as np
import torchio as tio

from ..index.build import VolumeSource, build_index
from ..index.patch_index import PatchIndex, default_stride
from ..labels import LabelSpec
from .base import Strategy, make_strategy

__all__ = ["StrategySampler"]

_CACHE_SIZE = 256  # subjects whose strategy is kept


class StrategySampler(tio.data.PatchSampler):
    """A torchio patch sampler driven by one of our strategies.

    Args:
        patch_size: patch side(s), as for any torchio sampler.
        strategy: a registered strategy name (see ``STRATEGIES``).
        label_name: the subject's label map key.
        stride: index grid step (default patch // 2, per axis; must divide the patch).
        label_spec: label convention of the label maps.
        seed: seed of this sampler's generator (draws are reproducible per sampler).
        **options: the strategy's own options.
    """

    def __init__(self, patch_size: int | tuple[int, int, int], strategy: str = "balanced",
                 *, label_name: str = "label", stride: int | tuple[int, int, int] | None = None,
                 label_spec: LabelSpec | None = None, seed: int = 0, **options: Any) -> None:
        super().__init__(patch_size)
        self.strategy_name, self.options = strategy, options
        self.label_name = label_name
        ps = tuple(int(p) for p in self.patch_size)
        self.stride = stride if stride is not None else default_stride(ps)
        self.label_spec = label_spec or LabelSpec()
        self.rng = np.random.default_rng(seed)
        self._strategies: OrderedDict[bytes, Strategy] = OrderedDict()

    def strategy_for(self, subject: tio.Subject) -> Strategy:
        """The strategy over this subject's index (built on first use, then cached)."""
        if self.label_name not in subject:
            raise KeyError(f"subject has no {self.label_name!r} label map; has "
                           f"{list(subject.get_images_dict(intensity_only=False))}")
        data = subject[self.label_name].data
        if data.shape[0] != 1:
            raise ValueError(f"label map must have one channel, got {data.shape[0]}")
        array = np.ascontiguousarray(data[0].numpy()).astype(np.uint8, copy=False)
        key = hashlib.sha256(array.data).digest() + str(array.shape).encode()
        if key in self._strategies:
            self._strategies.move_to_end(key)
            return self._strategies[key]
        label = da.from_array(array, chunks=128)
        index: PatchIndex = build_index(
            [VolumeSource("subject", label)], tuple(int(p) for p in self.patch_size),
            self.stride, label_spec=self.label_spec, strict=True, progress=False)
        strategy = make_strategy(self.strategy_name, index, **self.options)
        self._strategies[key] = strategy
        if len(self._strategies) > _CACHE_SIZE:
            self._strategies.popitem(last=False)
        return strategy

    def _generate_patches(self, subject: tio.Subject, num_patches: int | None = None
                          ) -> Generator[tio.Subject]:
        strategy = self.strategy_for(subject)
        corners = strategy.index.corners
        produced = 0
        while num_patches is None or produced < num_patches:
            row = int(strategy.sample(self.rng, 1)[0])
            yield self.extract_patch(subject, tuple(int(c) for c in corners[row]))
            produced += 1
