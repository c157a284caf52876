"""Label census per scroll, as a table people read before they pick class weights.

The column that matters is ``surface/labeled``: the surface share over labeled voxels. The
``1+2 (naive)`` column is there on purpose: it is the "foreground" a tool reports when it counts
unlabeled voxels as foreground, the mistake that made a real run chase a 66 % majority.
"""

from __future__ import annotations

from collections import defaultdict

from ..labels import LabelCensus
from .volume_store import VolumeStore

__all__ = ["census_by_scroll", "format_census_table"]


def census_by_scroll(store: VolumeStore) -> dict[str, tuple[int, LabelCensus]]:
    """``{scroll_id: (n_volumes, census)}`` from the census stored with each volume."""
    out: dict[str, tuple[int, LabelCensus]] = defaultdict(lambda: (0, LabelCensus.zero()))
    for vid in store.ids():
        info = store.info(vid)
        if info.census is None:
            continue
        n, c = out[info.scroll_id or "-"]
        out[info.scroll_id or "-"] = (n + 1, c + info.census)
    return dict(sorted(out.items()))


def format_census_table(rows: dict[str, tuple[int, LabelCensus]]) -> str:
    """Fixed-width table of a ``census_by_scroll`` result, with an ``all`` row."""
    header = (f"{'scroll':>10} {'volumes':>7} {'voxels':>10} {'0 bg':>7} {'1 surface':>9} "
              f"{'2 unlab.':>8} {'1+2 (naive)':>11} {'surface/labeled':>15}")
    lines = [header, "-" * len(header)]
    total_n, total = 0, LabelCensus.zero()
    items = list(rows.items())
    for name, (n, c) in items + [("all", (0, LabelCensus.zero()))]:
        if name == "all":
            n, c = total_n, total
            lines.append("-" * len(header))
        else:
            total_n, total = total_n + n, total + c
        f = c.fractions()
        lines.append(
            f"{name:>10} {n:>7} {c.total / 1e6:>9.1f}M {f['background']:>7.1%} "
            f"{f['foreground']:>9.1%} {f['ignore']:>8.1%} "
            f"{f['foreground'] + f['ignore']:>11.1%} {c.foreground_share_of_labeled:>15.1%}"
        )
    return "\n".join(lines)
