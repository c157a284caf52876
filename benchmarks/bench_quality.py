"""The quality yardstick: train on hard synthetic volumes, tune repair, score held-out volumes.

    python benchmarks/bench_quality.py [--out bench_quality] [--config cpu_budget]
        [--size 128] [--train 6] [--test 6] [--test-seed 3000] [--tta]
        [--transfer-checkpoint CHECKPOINT]
        [--key=value ...]   (any other --key=value goes to the trainer)

One run, every stage cached in OUT (rerun it and finished stages are skipped):
1. data: ``--train`` hard-preset volumes and one validation volume in a store; ``--test``
   held-out hard volumes and ``--test`` easy ones (transfer) from seeds never used for training
   (six by default: one 128^3 volume scores anywhere from 0.70 to 0.94, so three were too few
   to tell 0.79 from 0.80), and ``--test`` out-of-family volumes (``OUT_OF_FAMILY``: 1-voxel
   or 5-voxel sheets, stronger blur, coarse-grained noise, another scanner's gain and offset,
   each outside every training preset's range), scored only, never used to choose anything;
2. train with ``--config`` (wall time reported);
3. predict probabilities of the validation and test volumes (``--tta``: mean logit of the 8
   flips, 8x the time);
4. tune on the validation volume, by the competition metric: the threshold alone, and the
   threshold with every repair step (``vesuvius-tune``'s greedy search);
5. score the held-out volumes: empty prediction, the best intensity threshold (a smoothed image,
   sigma and percentile tuned on the validation volume's labels, with dust removal), the model
   thresholded, the model repaired, and the ablation: the repaired model with each step the
   search turned on left out, and with each step it left off added; and the labels
   themselves with the small errors a good model makes (shifted or thickened by one voxel, a
   few voxels dropped), which shows what the metric charges for near misses.
   The model with ``vesuvius-predict``'s defaults: the post-processing the trainer stored in
   best.pt (the same search on the same volume, so it should equal "model + repair").
   With ``--transfer-checkpoint`` also another model (e.g. the demo's, trained on the easy
   preset) on the hard test volumes: with ``vesuvius-predict``'s defaults (what it stored),
   repaired with repair tuned for it on the validation volume, and with that repair less sheet
   smoothing. Fold ensembles: ``benchmarks/bench_ensemble.py`` on the same data.
Prints one JSON document: per method and test set the mean score, TopoScore, SurfaceDice, VOI
score, and bars (predicted / label) per dimension; the repair config; timings. Writes
OUT/quality.png: for the first held-out hard volume, where each method misses a sheet (seen
across the sheets) and a cut through the sheets (right, missed, extra voxels).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainer.checkpoint import load_checkpoint  # noqa: E402
from trainer.commands.predict import load_model  # noqa: E402
from trainer.config import apply_overrides, config_from_dict, load_config  # noqa: E402
from trainer.inference import predict_volume  # noqa: E402
from trainer.model_folder import load_models  # noqa: E402
from trainer.train import train  # noqa: E402
from vesuvius_data import VolumeStore  # noqa: E402
from vesuvius_data.baselines import intensity_threshold, tune_intensity_threshold  # noqa: E402
from vesuvius_data.metrics import score_volume  # noqa: E402
from vesuvius_data.repair import RepairConfig, repair  # noqa: E402
from vesuvius_data.repair.tune import CachedRepair, config_of, search_stages, tune  # noqa: E402
from vesuvius_data.synthetic import OUT_OF_FAMILY, make_volume  # noqa: E402

TRAIN_SEED, VAL_SEED, TEST_SEED, TRANSFER_SEED, FAMILY_SEED = 1000, 2000, 3000, 4000, 5000
STEPS = {"sheet smoothing": {"sheet_sigma": 0.0},
         "hysteresis": {"weak_threshold": None}, "bridge cutting": {"split_seed": None},
         "dust": {"min_component": 0},
         "plug": {"plug": False}, "patch": {"patch_area": 0}, "cavities": {"max_cavity": 0}}
#: what each step adds when the tuned config left it off (the other half of the ablation)
STEPS_ON = {"sheet smoothing": {"sheet_sigma": 1.5}, "hysteresis": {"weak_threshold": 0.3},
            "bridge cutting": {"split_seed": 0.99},
            "dust": {"min_component": 10},
            "plug": {"plug": True}, "patch": {"patch_area": 64}, "cavities": {"max_cavity": 100}}


def _volumes(size: int, seed: int, n: int, preset: str) -> dict[str, tuple[np.ndarray, ...]]:
    return {f"{preset}{seed + i}": make_volume((size,) * 3, seed + i, preset=preset)
            for i in range(n)}


def _out_of_family(size: int, n: int) -> dict[str, tuple[np.ndarray, ...]]:
    """``n`` volumes cycling through ``OUT_OF_FAMILY`` looks: never trained, tuned or chosen
    on, only scored."""
    names = list(OUT_OF_FAMILY)
    return {f"{names[i % len(names)].replace(' ', '_')}{FAMILY_SEED + i}": make_volume(
        (size,) * 3, FAMILY_SEED + i, preset=OUT_OF_FAMILY[names[i % len(names)]])
        for i in range(n)}


def _data(out: Path, size: int, n_train: int, preset: str = "hard") -> Path:
    """``n_train`` training volumes and one validation volume ("val") of ``preset``."""
    path = out / f"{preset}.zarr"
    if path.exists() and len(VolumeStore.open(path).ids()) == n_train + 1:
        return path
    store = VolumeStore.create(path, overwrite=True)
    for i in range(n_train):
        store.add_volume(f"train{i}", *make_volume((size,) * 3, TRAIN_SEED + i, preset=preset),
                         scroll_id=f"s{i}")
    store.add_volume("val", *make_volume((size,) * 3, VAL_SEED, preset=preset), scroll_id="val")
    return path


def _train(out: Path, store: Path, config: str, overrides: dict[str, str]) -> tuple[Path, float]:
    cfg = apply_overrides(load_config(config), {"data_dir": str(store), "out": str(out / "run"),
                                                "val_volumes": "[val]", **overrides})
    run = Path(cfg.out)
    done = run / "done.json"
    # a run made before a config key existed had its default: the same config
    if done.is_file() and config_from_dict(json.loads(done.read_text())["config"]) == cfg:
        return run, json.loads(done.read_text())["seconds"]
    t = time.perf_counter()
    rc = train(cfg, log=lambda line: print(line, file=sys.stderr))  # stdout is the JSON
    seconds = time.perf_counter() - t
    if rc:
        raise SystemExit(f"training failed with exit status {rc}")
    done.write_text(json.dumps({"config": dataclasses.asdict(cfg), "seconds": seconds}))
    return run, seconds


def _probabilities(checkpoint: Path, images: dict[str, np.ndarray], tta: bool
                   ) -> dict[str, np.ndarray]:
    model, patch = load_model(checkpoint)
    return {vid: predict_volume(model, image, (patch,) * 3, overlap=0.5, tta=tta, batch_size=4)
            for vid, image in images.items()}


def _stored_repair(checkpoint: Path) -> RepairConfig:
    """What ``vesuvius-predict CHECKPOINT`` applies with no flags."""
    pp = load_models([checkpoint]).postprocessing
    return pp.repair if pp else RepairConfig()


def _summary(masks: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict:
    scores = [score_volume(masks[v], labels[v]) for v in labels]
    mean = {k: float(np.mean([getattr(s, k) for s in scores]))
            for k in ("score", "topo_score", "surface_dice", "voi_score", "voi_split",
                      "voi_merge")}
    per_volume = [round(s.score, 4) for s in scores]
    bars = {f"dim{d}": [int(sum(s.betti.pred[d] for s in scores)),
                        int(sum(s.betti.gt[d] for s in scores))] for d in range(3)}
    return mean | {"per_volume": per_volume, "bars_pred_label": bars}


def _sheet_axis(mask: np.ndarray) -> int:
    """The axis the sheets stack along: the one crossing the most surface/background edges."""
    return int(np.argmax([np.count_nonzero(np.diff(mask, axis=a)) for a in range(3)]))


def _missed_runs(label: np.ndarray, pred: np.ndarray, axis: int) -> np.ndarray:
    """Per column across the sheets: how many runs of surface voxels (one per sheet it crosses)
    the prediction misses entirely, within one voxel. A pinhole through a sheet is one miss."""
    surface = np.moveaxis(label == 1, axis, 0)
    near = np.moveaxis(ndimage.binary_dilation(pred.astype(bool), _along(axis)), axis, 0)
    starts = surface & ~np.concatenate([np.zeros_like(surface[:1]), surface[:-1]])
    run = np.cumsum(starts, axis=0) * surface  # run number within each column, 0 off-surface
    column = np.broadcast_to(np.arange(surface[0].size).reshape(surface.shape[1:]),
                             surface.shape)
    key = column.astype(np.int64) * (surface.shape[0] + 1) + run
    runs = np.unique(key[surface])
    covered = np.unique(key[surface & near])
    missed = np.setdiff1d(runs, covered) // (surface.shape[0] + 1)
    return np.bincount(missed, minlength=surface[0].size).reshape(surface.shape[1:])


def _along(axis: int) -> np.ndarray:
    """A 3-voxel line along ``axis`` (a structuring element)."""
    shape = [1, 1, 1]
    shape[axis] = 3
    return np.ones(shape, bool)


def _figure(path: Path, name: str, label: np.ndarray, masks: dict[str, np.ndarray]) -> None:
    """One held-out volume, per method: where the prediction misses a sheet (seen across the
    sheets: pinholes) and a cut through the sheets (where it is too thick or off)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    axis = _sheet_axis(label == 1)
    cut_axis = next(a for a in range(3) if a != axis)
    middle = label.shape[cut_axis] // 2
    footprint = np.moveaxis(label == 1, axis, 0).any(axis=0)
    fig, axes = plt.subplots(len(masks), 2, figsize=(10, 4.6 * len(masks)), squeeze=False)
    # cut colours: 0 background, 1 unlabeled, 2 right, 3 missed, 4 extra
    cut_colours = ListedColormap(["white", "#e6e6e6", "#222222", "#d62728", "#1f77b4"])
    for row, (method, mask) in enumerate(masks.items()):
        missed = _missed_runs(label, mask, axis)
        shown = np.where(missed > 0, 2, footprint.astype(int))
        ax = axes[row, 0]
        ax.imshow(shown, cmap=ListedColormap(["white", "#bbbbbb", "#d62728"]), vmin=0, vmax=2,
                  interpolation="nearest")
        ax.set_title(f"{method}\nseen across the sheets: {int((missed > 0).sum())} columns "
                     f"miss a sheet (red)", fontsize=9)
        ax.set_axis_off()
        lab = np.take(label, middle, axis=cut_axis)
        pred = np.take(mask, middle, axis=cut_axis).astype(bool)
        cut = np.where(lab == 2, 1, 0)
        cut = np.where((lab == 1) & pred, 2, cut)
        cut = np.where((lab == 1) & ~pred, 3, cut)
        cut = np.where((lab == 0) & pred, 4, cut)
        if [a for a in range(3) if a != cut_axis].index(axis) == 1:
            cut = cut.T  # the sheets stack top to bottom
        ax = axes[row, 1]
        ax.imshow(cut, cmap=cut_colours, vmin=0, vmax=4, interpolation="nearest")
        ax.set_title("a cut through the sheets: right (black), missed (red), extra (blue), "
                     "unlabeled (grey)", fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"held-out hard volume {name} (the yardstick's model)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _near_misses(label: np.ndarray) -> dict[str, np.ndarray]:
    """The label with the small errors a good model makes, to show what the metric charges for
    them: a one-voxel offset or thickening moves VOI (voxel-exact) and the slivers where the
    annotated region cuts sheets; a few dropped voxels are pinholes (TopoScore)."""
    surface = label == 1
    axis = _sheet_axis(surface)
    rng = np.random.default_rng(0)
    return {
        "labels shifted one voxel across the sheets": np.roll(surface, 1, axis=axis),
        "labels one voxel thicker": surface | np.roll(surface, 1, axis=axis),
        "labels with 0.2 % of surface voxels dropped": surface & (rng.random(label.shape) >= 0.002),
        "labels with 1 % of surface voxels dropped": surface & (rng.random(label.shape) >= 0.01),
    }


def _rotation_damage(label: np.ndarray, patch: int = 48, n: int = 6) -> dict[str, list[int]]:
    """Loops (dimension-1 bars) in labelled surface of ``n`` patches before and after a random
    affine of the kind the trainer used to apply (10 degrees, 10 % scale): why augmentation
    now only flips and permutes axes (``trainer/augment.py``)."""
    import torch
    import torchio as tio

    from vesuvius_data.metrics.topology import betti_counts

    def loops(surface: np.ndarray) -> int:
        return int(betti_counts(surface, surface).pred[1])

    torch.manual_seed(0)
    out: dict[str, list[int]] = {"before": [], "nearest": [], "linear, thresholded at 0.5": []}
    for i in range(n):
        c = np.random.default_rng(i).integers(0, label.shape[0] - patch, 3)
        crop = label[c[0]:c[0] + patch, c[1]:c[1] + patch, c[2]:c[2] + patch]
        subject = tio.Subject(
            label=tio.LabelMap(tensor=torch.from_numpy(crop[None].astype(np.int64))),
            surface=tio.ScalarImage(tensor=torch.from_numpy((crop == 1)[None].astype(np.float32))))
        moved = tio.RandomAffine(scales=0.1, degrees=10, image_interpolation="linear")(subject)
        lab = moved["label"].data[0].numpy()
        out["before"].append(loops(crop == 1))
        out["nearest"].append(loops(lab == 1))
        out["linear, thresholded at 0.5"].append(
            loops((moved["surface"].data[0].numpy() >= 0.5) & (lab != 2)))
    return out


def yardstick_arguments(doc: str) -> argparse.ArgumentParser:
    """The arguments every yardstick benchmark shares (its data, its model's config)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=doc.split("\n\n", 1)[1])
    ap.add_argument("--out", type=Path, default=Path("bench_quality"))
    ap.add_argument("--config", default="cpu_budget")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--train", type=int, default=6)
    ap.add_argument("--test", type=int, default=6, help="held-out volumes per preset")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = yardstick_arguments(__doc__)
    ap.add_argument("--test-seed", type=int, default=TEST_SEED,
                    help="first seed of the held-out hard volumes (3500: a second set)")
    ap.add_argument("--tta", action="store_true", help="8-flip test-time augmentation")
    ap.add_argument("--transfer-checkpoint", type=Path, default=None,
                    help="also score this model (e.g. the demo's) on the hard test volumes")
    args, rest = ap.parse_known_args(argv)
    overrides = dict(a[2:].split("=", 1) for a in rest if a.startswith("--") and "=" in a)
    args.out.mkdir(parents=True, exist_ok=True)
    timings = {}

    t = time.perf_counter()
    store_path = _data(args.out, args.size, args.train)
    store = VolumeStore.open(store_path)
    val_image, val_label = np.asarray(store.image("val")), np.asarray(store.label("val"))
    tests = {"hard": _volumes(args.size, args.test_seed, args.test, "hard"),
             "easy (transfer)": _volumes(args.size, TRANSFER_SEED, args.test, "easy"),
             "out of family": _out_of_family(args.size, args.test)}
    timings["data_s"] = time.perf_counter() - t

    run, timings["train_s"] = _train(args.out, store_path, args.config, overrides)
    checkpoint = run / "best.pt"
    ck = load_checkpoint(checkpoint)
    print(f"model: {checkpoint} (epoch {ck['epoch']}, selection score {ck['best_score']:.4f})",
          file=sys.stderr)

    t = time.perf_counter()
    images = {"val": val_image} | {v: im for part in tests.values() for v, (im, _) in part.items()}
    probs = _probabilities(checkpoint, images, args.tta)
    timings["predict_s_per_volume"] = (time.perf_counter() - t) / len(images)

    t = time.perf_counter()
    stages = search_stages()  # the search of tools/tune_postprocess.py, as a user runs it
    unsmoothed = [[u for u in stages[0] if not u["sheet_sigma"]]]
    only_threshold = tune({"val": probs["val"]}, {"val": val_label}, unsmoothed)[0]
    best_rows = tune({"val": probs["val"]}, {"val": val_label}, stages)
    best = config_of(best_rows[0])
    plain = config_of(only_threshold)
    intensity = tune_intensity_threshold({"val": val_image}, {"val": val_label})
    stored = _stored_repair(checkpoint)
    timings["tune_s"] = time.perf_counter() - t

    t = time.perf_counter()
    results: dict[str, dict] = {}
    repaired = CachedRepair(probs)
    for part, vols in tests.items():
        labels = {v: lab for v, (_, lab) in vols.items()}
        methods = {
            "empty": {v: np.zeros_like(lab) for v, lab in labels.items()},
            "intensity threshold (tuned)": {v: intensity_threshold(
                im, intensity["sigma"], intensity["percentile"], intensity["dust"])
                for v, (im, _) in vols.items()},
            "model, threshold only": {v: repaired(v, plain) for v in labels},
            "model + repair": {v: repaired(v, best) for v in labels},
            "model, vesuvius-predict's defaults (the post-processing stored at the end of "
            "training)": {v: repaired(v, stored) for v in labels},
        }
        near = {v: _near_misses(lab) for v, lab in labels.items()}
        for name in next(iter(near.values())):
            methods[name] = {v: near[v][name] for v in labels}
        for step, off in STEPS.items():
            on = any(getattr(best, k) != val for k, val in off.items())
            change = off if on else STEPS_ON[step]
            try:
                ablated = dataclasses.replace(best, **change)
            except ValueError:  # e.g. hysteresis or a seed on the wrong side of the threshold
                continue
            name = f"model + repair {'without' if on else 'with'} {step}"
            methods[name] = {v: repaired(v, ablated) for v in labels}
        results[part] = {name: _summary(masks, labels) for name, masks in methods.items()}
    if args.transfer_checkpoint:
        other = _probabilities(args.transfer_checkpoint,
                               {"val": val_image} | {v: im for v, (im, _) in
                                                     tests["hard"].items()}, args.tta)
        cfg = config_of(tune({"val": other["val"]}, {"val": val_label}, stages)[0])
        labels = {v: lab for v, (_, lab) in tests["hard"].items()}
        results["hard"][f"{args.transfer_checkpoint} + repair"] = _summary(
            {v: repair(other[v], cfg) for v in labels}, labels)
        results["hard"][f"{args.transfer_checkpoint} + repair"]["repair"] = cfg.to_flags()
        if _stored_repair(args.transfer_checkpoint) != RepairConfig():
            results["hard"][f"{args.transfer_checkpoint}, vesuvius-predict's defaults"] = \
                _summary({v: repair(other[v], _stored_repair(args.transfer_checkpoint))
                          for v in labels}, labels)
        unsmoothed = dataclasses.replace(cfg, sheet_sigma=0.0)
        results["hard"][f"{args.transfer_checkpoint} + repair without sheet smoothing"] = \
            _summary({v: repair(other[v], unsmoothed) for v in labels}, labels)
    timings["score_s"] = time.perf_counter() - t
    first, (_, first_label) = next(iter(tests["hard"].items()))
    _figure(args.out / "quality.png", first, first_label, {
        f"model, threshold only ({plain.threshold})": repaired(first, plain),
        f"model + repair ({best.to_flags()})": repaired(first, best),
        "the labels with 0.2 % of their voxels dropped": _near_misses(first_label)[
            "labels with 0.2 % of surface voxels dropped"]})

    report = {"size": args.size, "tta": args.tta, "train_volumes": args.train,
              "test_volumes": args.test,
              "test_seed": args.test_seed, "config": args.config, "overrides": overrides,
              "checkpoint_epoch": ck["epoch"],
              "repair": best.to_flags(), "threshold_only": plain.to_flags(),
              "validation": {"model + repair": best_rows[0]["score"],
                             "model, threshold only": only_threshold["score"],
                             "intensity threshold": intensity},
              "results": results, "timings": timings,
              "loops_in_48_patches_rotated": _rotation_damage(
                  make_volume((args.size,) * 3, TEST_SEED, preset="hard")[1])}
    print(json.dumps(report, indent=1))
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
