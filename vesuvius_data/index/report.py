"""What an index says about a dataset: a summary dict (JSON-ready), its text form, a PNG."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import numpy as np

from .patch_index import PatchIndex

__all__ = ["summarize", "format_summary", "write_report_png"]

FG_BINS = (0.0, 1e-9, 0.02, 0.05, 0.1, 0.2, 0.4, 1.0000001)


def summarize(index: PatchIndex) -> dict[str, Any]:
    """Rows, census (both views), suggested class weights, fg_ratio distribution."""
    census = index.census()
    fr = census.fractions()
    fg = index.fg_ratio
    labeled = index.labeled > 0
    hist, _ = np.histogram(fg[labeled], bins=FG_BINS)
    names = ["0", "(0,2%]", "(2,5%]", "(5,10%]", "(10,20%]", "(20,40%]", "(40,100%]"]
    try:
        weights: dict[str, float] | None = index.class_weights()
    except ValueError:
        weights = None
    rows_per_scroll = Counter()
    counts = np.bincount(index.volume, minlength=len(index.volumes))
    for code, v in enumerate(index.volumes.values()):
        rows_per_scroll[v.get("scroll_id") or "-"] += int(counts[code])
    return {
        "rows": len(index),
        "bytes": index.nbytes(),
        "patch_size": list(index.params.patch_size),
        "stride": list(index.params.stride),
        "volumes": len(index.volumes),
        "rows_per_volume": {vid: int(counts[c]) for c, vid in enumerate(index.volumes)},
        "rows_per_scroll": dict(sorted(rows_per_scroll.items())),
        "census": {
            "voxels": census.total,
            "fraction_all_voxels": fr,
            "naive_foreground_with_ignore": fr["foreground"] + fr["ignore"],
            "surface_share_of_labeled": census.foreground_share_of_labeled,
        },
        "class_weights_inverse": weights,
        "classes": {name: {"share_of_labeled": n / max(census.labeled, 1),
                           "patches_holding": int((index.class_count(name) > 0).sum())}
                    for name, n in census.class_counts().items()},
        "focal_alpha": index.focal_alpha(),
        "fg_ratio": {
            "patches_with_labels": int(labeled.sum()),
            "patches_with_surface": int((index.surface > 0).sum()),
            "quantiles": {str(q): float(np.quantile(fg[labeled], q)) if labeled.any() else None
                          for q in (0.1, 0.5, 0.9)},
            "histogram": dict(zip(names, (int(h) for h in hist), strict=True)),
        },
        "build": index.meta.get("build"),
    }


def format_summary(s: dict[str, Any]) -> str:
    c = s["census"]
    f = c["fraction_all_voxels"]
    lines = [
        f"index: {s['rows']} patches of {tuple(s['patch_size'])} at stride "
        f"{tuple(s['stride'])} from {s['volumes']} volumes ({s['bytes'] / 1e6:.2f} MB)",
        "rows per scroll: " + ", ".join(f"{k}: {v}" for k, v in s["rows_per_scroll"].items()),
        f"census over all voxels: background {f['background']:.1%}, surface "
        f"{f['foreground']:.1%}, unlabeled {f['ignore']:.1%}",
        f"surface share of LABELED voxels: {c['surface_share_of_labeled']:.1%}   "
        f"(counting unlabeled as foreground would claim {c['naive_foreground_with_ignore']:.1%})",
    ]
    classes = s["classes"]
    if len(classes) > 2:  # multi-class: each class's share and the patches that hold it
        lines.append("classes (share of labeled voxels; patches holding it): " + ", ".join(
            f"{n} {c['share_of_labeled']:.2%} ({c['patches_holding']})"
            for n, c in classes.items()))
    w = s["class_weights_inverse"]
    if w:
        lines.append("suggested class weights (inverse labeled frequency): "
                     + ", ".join(f"{n} {v:.3f}" for n, v in w.items())
                     + f"; focal alpha (surface) {s['focal_alpha']:.3f}")
    fr = s["fg_ratio"]
    lines.append(f"fg_ratio over {fr['patches_with_labels']} patches with labels "
                 f"({fr['patches_with_surface']} hold surface):")
    total = max(fr["patches_with_labels"], 1)
    for name, n in fr["histogram"].items():
        lines.append(f"  {name:>10} {n:>8} {'#' * round(40 * n / total)}")
    b = s.get("build") or {}
    if b:
        lines.append(f"build: {len(b.get('built', []))} volumes indexed, "
                     f"{len(b.get('reused', []))} reused unchanged, "
                     f"{len(b.get('dropped', []))} dropped, "
                     f"{len(b.get('skipped_small', []))} skipped (smaller than the patch)"
                     + (f"; rebuilt all: {b['rebuilt_all_because']}"
                        if b.get("rebuilt_all_because") else ""))
    return "\n".join(lines)


def write_report_png(index: PatchIndex, path: str | os.PathLike[str]) -> None:
    """Histograms of fg_ratio and labeled_ratio, and rows per scroll, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarize(index)
    fig, ax = plt.subplots(1, 3, figsize=(14, 4), constrained_layout=True)
    labeled = index.labeled > 0
    ax[0].hist(index.fg_ratio[labeled], bins=40, color="tab:orange")
    share = s["census"]["surface_share_of_labeled"]
    ax[0].axvline(share, color="k", ls="--", label=f"dataset {share:.1%}")
    ax[0].set(title="fg_ratio = surface / labeled, per patch", xlabel="fg_ratio",
              ylabel="patches")
    ax[0].legend()
    ax[1].hist(index.labeled_ratio, bins=40, color="tab:blue")
    ax[1].set(title="labeled_ratio = labeled / patch voxels", xlabel="labeled_ratio")
    names = list(s["rows_per_scroll"])
    ax[2].bar(names, [s["rows_per_scroll"][n] for n in names], color="tab:green")
    ax[2].set(title="patches per scroll", xlabel="scroll_id")
    fig.suptitle(f"{s['rows']} patches {tuple(s['patch_size'])} / stride {tuple(s['stride'])}")
    tmp = f"{path}.partial.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
