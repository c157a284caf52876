"""Group k-fold: volumes of one scroll never sit on both sides of a split."""

from __future__ import annotations

from collections import defaultdict

from vesuvius_data.store import VolumeStore


def split_folds(store: VolumeStore, volume_ids: list[str], num_folds: int, fold: int,
                val_volumes: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(train ids, validation ids) of ``fold``, or of the explicit ``val_volumes``.

    Groups are scroll ids, or single volumes when all volumes share one scroll. Groups go,
    largest first, to the fold holding the fewest volumes so far, so folds are balanced and
    the split depends only on the data.
    """
    if val_volumes:
        unknown = sorted(set(val_volumes) - set(volume_ids))
        if unknown:
            raise ValueError(f"val_volumes {unknown} are not in the store; known: "
                             f"{', '.join(sorted(volume_ids))}")
        val = sorted(set(val_volumes))
        train = sorted(v for v in volume_ids if v not in set(val))
        if not train:
            raise ValueError("val_volumes leaves no volume to train on")
        return train, val
    if num_folds < 2:
        raise ValueError(f"num_folds must be >= 2 (a validation fold is needed), got {num_folds}")
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in [0, {num_folds}), got {fold}")
    groups: dict[str, list[str]] = defaultdict(list)
    for vid in volume_ids:
        groups[store.info(vid).scroll_id or vid].append(vid)
    if len(groups) < 2:
        groups = {vid: [vid] for vid in volume_ids}
    if len(groups) < num_folds:
        raise ValueError(f"num_folds={num_folds} but only {len(groups)} groups (scrolls, or "
                         f"volumes when there is one scroll); use num_folds <= {len(groups)}")
    sizes = [0] * num_folds
    members: list[list[str]] = [[] for _ in range(num_folds)]
    for name in sorted(groups, key=lambda g: (-len(groups[g]), g)):
        k = min(range(num_folds), key=lambda i: (sizes[i], i))
        members[k] += groups[name]
        sizes[k] += len(groups[name])
    val = sorted(members[fold])
    return sorted(v for v in volume_ids if v not in set(val)), val
