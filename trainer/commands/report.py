"""Plot one or more training runs side by side, and print each run's verdict.

    vesuvius-report RUN_DIR [RUN_DIR ...] [--out report.png]

Panels: training and validation loss, each loss term, learning rate, predicted vs label
foreground share, validation score. Several runs overlay, so an old and a new run compare at a
glance.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from trainer.verdict import format_verdict, read_metrics, verdict
from vesuvius_data.cli import user_errors


def plot_runs(runs: dict[str, list[dict]], path: str | os.PathLike[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5), constrained_layout=True)
    (loss_ax, term_ax, lr_ax), (fg_ax, score_ax, rec_ax) = axes
    for i, (name, recs) in enumerate(runs.items()):
        color = f"C{i}"
        ep = [r["epoch"] for r in recs]
        loss_ax.plot(ep, [r["train_loss"] for r in recs], color=color, label=f"{name} train")
        loss_ax.plot(ep, [r["val_loss"] for r in recs], color=color, ls="--",
                     label=f"{name} val")
        for j, term in enumerate(recs[0]["terms"]):
            term_ax.plot(ep, [r["terms"][term] for r in recs], color=color,
                         ls=["-", "--", ":", "-.", (0, (1, 3))][j % 5], label=f"{name} {term}")
        lr_ax.plot(ep, [r["lr"] for r in recs], color=color, label=name)
        fg_ax.plot(ep, [r["train"]["pred_fg"] for r in recs], color=color,
                   label=f"{name} predicted")
        fg_ax.plot(ep, [r["train"]["label_fg"] for r in recs], color=color, ls=":",
                   label=f"{name} label")
        score_ax.plot(ep, [r.get("dice", r["score"]) for r in recs], color=color, marker="o",
                      label=f"{name} dice")
        comp = [(r["epoch"], r["competition"]["score"]) for r in recs if r.get("competition")]
        if comp:  # the competition metric, on the epochs that computed it
            score_ax.plot(*zip(*comp, strict=True), color=color, marker="s", linestyle="--",
                          label=f"{name} (competition)")
        rec_ax.plot(ep, [r["val"]["fg_recall"] for r in recs], color=color,
                    label=f"{name} fg recall")
        rec_ax.plot(ep, [r["val"]["bg_recall"] for r in recs], color=color, ls="--",
                    label=f"{name} bg recall")
        for r in recs:
            if r.get("alarms"):
                fg_ax.axvline(r["epoch"], color="red", alpha=0.3)
    titles = ["loss", "loss terms (train)", "learning rate",
              "foreground share of labeled voxels (red: alarm)", "validation score",
              "validation recall"]
    for ax, title in zip(axes.flat, titles, strict=True):
        ax.set(title=title, xlabel="epoch")
        ax.legend(fontsize=7)
    tmp = f"{path}.partial.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


@user_errors
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders (with metrics.jsonl)")
    ap.add_argument("--out", default=None, help="PNG path (default: FIRST_RUN/report.png)")
    args = ap.parse_args(argv)
    runs = {Path(r).name: read_metrics(r) for r in args.runs}
    for run, recs in zip(args.runs, runs.values(), strict=True):
        if not recs:
            raise ValueError(f"{Path(run) / 'metrics.jsonl'}: no epochs recorded yet")
    for name, recs in runs.items():
        print(f"{name}: {len(recs)} epochs")
        print(format_verdict(verdict(recs)))
    out = args.out or str(Path(args.runs[0]) / "report.png")
    plot_runs(runs, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
