"""A run's verdict against explicit success criteria, from its metrics.jsonl records."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_metrics", "verdict", "format_verdict"]

EARLY_EPOCHS = 3  # the loss must fall within these
MIN_EARLY_DROP = 0.10  # ... by at least this fraction
MAX_GAP = 0.25  # (val - train) / train at the best epoch
MIN_BALANCED_ACCURACY = 0.80  # foreground and background separated


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """A run's epoch records, each checked to hold what the verdict and the report read; a
    damaged line is an error naming the file and the line."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            problem = _record_problem(record, records[0] if records else None)
        except ValueError as e:
            problem = f"not JSON ({e})"
        if problem:
            raise ValueError(f"{path}: line {i} is not an epoch record the trainer writes: "
                             f"{problem}")
        records.append(record)
    return records


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _record_problem(record: Any, first: dict[str, Any] | None) -> str | None:
    """What is wrong with one metrics.jsonl record, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    bad = [k for k in ("epoch", "train_loss", "val_loss", "lr") if not _number(record.get(k))]
    bad += [k for k in ("score", "dice") if record.get(k) is not None
            and not _number(record[k])]
    for group, keys in (("train", ("pred_fg", "label_fg")),
                        ("val", ("fg_recall", "bg_recall", "balanced_accuracy"))):
        values = record.get(group)
        if not isinstance(values, dict) or not all(_number(values.get(k)) for k in keys):
            bad.append(group)
    terms = record.get("terms")
    if not isinstance(terms, dict) or not all(_number(v) for v in terms.values()) or (
            first is not None and set(terms) != set(first["terms"])):
        bad.append("terms")
    comp = record.get("competition")
    if comp is not None and not (isinstance(comp, dict) and _number(comp.get("score"))):
        bad.append("competition")
    if not isinstance(record.get("alarms", []), list):
        bad.append("alarms")
    return f"missing or wrong {', '.join(bad)}" if bad else None


def verdict(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Each criterion with its number and whether it passed."""
    if not records:
        return {"passed": False, "criteria": {}, "reason": "no epochs recorded"}
    losses = [r["train_loss"] for r in records]
    k = min(EARLY_EPOCHS, len(losses) - 1)
    drop = (losses[0] - losses[k]) / abs(losses[0]) if k > 0 and losses[0] else 0.0
    scored = [r for r in records if r.get("score") is not None]
    best = max(scored or records, key=lambda r: r.get("score") or -1.0)
    gap = (best["val_loss"] - best["train_loss"]) / max(abs(best["train_loss"]), 1e-8)
    bacc = records[-1]["val"]["balanced_accuracy"]
    criteria = {
        "early_loss_drop": {"value": drop, "target": f">= {MIN_EARLY_DROP:.0%} within "
                            f"{EARLY_EPOCHS} epochs", "passed": drop >= MIN_EARLY_DROP},
        "train_val_gap": {"value": gap, "target": f"<= {MAX_GAP:.0%} at the best epoch",
                          "passed": gap <= MAX_GAP},
        "separation": {"value": bacc, "target": f"val balanced accuracy >= "
                       f"{MIN_BALANCED_ACCURACY}", "passed": bacc >= MIN_BALANCED_ACCURACY},
        "best_score": _best_score(best, bool(scored)),
    }
    alarms = sum(len(r.get("alarms", [])) for r in records)
    return {"passed": all(c["passed"] for c in criteria.values()) and not alarms,
            "criteria": criteria, "alarms": alarms}


def _best_score(best: dict[str, Any], any_scored: bool) -> dict[str, Any]:
    """The score that picked best.pt must beat what an empty prediction scores (0 for dice;
    ~0.65 for the competition metric where each octant holds one sheet)."""
    name = best.get("score_name", "dice")
    what = ("guarded competition score" if name == "competition"
            else "dice at 0.5 on labeled voxels")
    baseline = float(best.get("baseline") or 0.0)
    value = float(best["score"]) if any_scored else float("nan")
    return {"value": value, "epoch": best["epoch"],
            "target": f"{what} above an empty prediction's {baseline:.4f}",
            "passed": any_scored and value > baseline}


def format_verdict(v: dict[str, Any]) -> str:
    if not v["criteria"]:
        return f"verdict: FAIL ({v.get('reason')})"
    lines = [f"verdict: {'PASS' if v['passed'] else 'FAIL'}"
             + (f" ({v['alarms']} health alarms)" if v.get("alarms") else "")]
    for name, c in v["criteria"].items():
        extra = f" at epoch {c['epoch']}" if "epoch" in c else ""
        lines.append(f"  [{'ok' if c['passed'] else '!!'}] {name}: {c['value']:.3f}{extra} "
                     f"(target {c['target']})")
    return "\n".join(lines)
