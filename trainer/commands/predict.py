"""Turn a model into one uint8 mask TIF per input volume (and a submission zip).

    vesuvius-predict MODEL [MODEL ...] INPUT OUT_DIR [--tta] [--overlap 0.5]
        [--zip submission.zip] [--no-repair] [--threshold 0.5 ...any repair flag]
        [--probabilities PROB_DIR [--prob-dtype float16|uint8]] [--trust-checkpoint]
    (python tools/predict.py ... in a checkout is the same command)

MODEL is a checkpoint (.pt), a run folder (its best.pt), or a model folder written by
vesuvius-crossval (its folds predict as an ensemble: their logits are averaged per window);
several MODELs form one ensemble. The post-processing stored with the model (chosen by the
competition metric at the end of training, or on out-of-fold predictions by
vesuvius-crossval) is applied by default and named in one line; a repair flag given here
overrides its field, --no-repair applies a 0.5 threshold (and the flags given) instead. A
model without stored post-processing is thresholded at 0.5 unless flags say otherwise.

INPUT is a folder of TIF stacks (e.g. test_images/), a .zip of them or a VolumeStore (read
window by window); each output keeps its input's name ({id}.tif). --probabilities also keeps
the blended probabilities ({id}.tif as float16, or uint8 = round(255 p)), so vesuvius-tune
can search post-processing without predicting again. Sliding-window inference with Gaussian
blending; see trainer/inference.py and vesuvius_data/repair/.

Checkpoints are data: one that would run code when loaded is refused; --trust-checkpoint
loads it anyway, for a file you vouch for.

Scroll scale: --zarr writes each input as a volume of the VolumeStore OUT_DIR (image region,
thresholded mask as its label, probabilities as "prob"), block by block (see
trainer/blockwise.py): memory bounded by --block whatever the volume size, --region
z0:z1,y0:y1,x0:x1 to predict part of a volume, resumable after a kill (finished blocks are
skipped), and split across processes: under torchrun each process takes its own blocks. The
stitched result equals whole-volume prediction; the volume is published in the store when its
last block is written, ready for vesuvius-index, vesuvius-evaluate and training. Repair steps
that need whole sheets are not applied in this mode: the stored threshold only.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np
import tifffile
import torch
from tqdm.auto import tqdm

from trainer.inference import encode_probabilities, predict_volume, window_corners
from trainer.model_folder import LoadedModels, load_models
from vesuvius_data.cli import positive_int, user_errors
from vesuvius_data.repair import (
    RepairConfig,
    add_repair_arguments,
    repair,
    repair_config_from_args,
)
from vesuvius_data.store import VolumeStore
from vesuvius_data.store.handles import volume_handles


def load_model(checkpoint: str | Path, trust: bool = False) -> tuple[torch.nn.Module, int]:
    """The model of one checkpoint or run folder (its EMA weights when it kept them) and its
    patch size."""
    loaded = load_models([checkpoint], trust)
    return loaded.models[0], loaded.patch


def chosen_repair(loaded: LoadedModels, args: argparse.Namespace) -> tuple[RepairConfig, str]:
    """The post-processing to apply and the line that says which and why: the stored one
    with the flags given on top, or (``--no-repair``, or none stored) the flags alone."""
    given = repair_config_from_args(args, RepairConfig()).to_flags()
    explicit = [f for f in vars(args) if f in RepairConfig.__dataclass_fields__]
    if loaded.postprocessing is None or args.no_repair:
        config = repair_config_from_args(args)
        why = ("--no-repair" if args.no_repair and loaded.postprocessing else loaded.where)
        return config, f"post-processing: {given} ({why}{'; flags given' * bool(explicit)})"
    config = repair_config_from_args(args, loaded.postprocessing.repair)
    note = f"; flags given override {', '.join(explicit)}" if explicit else ""
    return config, (f"post-processing stored with the model ({loaded.where}): "
                    f"{loaded.postprocessing.describe()}{note}; --no-repair turns it off")


def _write_tif(path: Path, data: np.ndarray) -> None:
    tmp = path.with_suffix(".tif.partial")
    tifffile.imwrite(tmp, data, compression="lzw" if data.dtype == np.uint8 else "zlib")
    tmp.replace(path)


@user_errors
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("model", nargs="+", help="a .pt file, a run folder (its best.pt) or a "
                    "model folder of folds (an ensemble); several form one ensemble")
    ap.add_argument("input", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--tta", action="store_true", help="average over the 8 flips")
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--batch-size", type=positive_int, default=2)
    ap.add_argument("--zip", type=Path, default=None, help="also pack the TIFs into this zip")
    ap.add_argument("--probabilities", type=Path, default=None,
                    help="also write the probabilities, one TIF per input, into this folder")
    ap.add_argument("--prob-dtype", choices=("float16", "uint8"), default="float16")
    ap.add_argument("--zarr", action="store_true",
                    help="write probabilities and masks into the zarr group OUT_DIR, block by "
                    "block (resumable, bounded memory, one share per process)")
    ap.add_argument("--region", default=None, help="with --zarr: z0:z1,y0:y1,x0:x1")
    ap.add_argument("--block", type=positive_int, default=256,
                    help="with --zarr: block side in voxels (a multiple of 64)")
    ap.add_argument("--no-repair", action="store_true",
                    help="ignore the post-processing stored with the model")
    ap.add_argument("--trust-checkpoint", action="store_true",
                    help="load checkpoints that hold more than tensors and plain types (this "
                    "can run code they carry: only for files you trust)")
    add_repair_arguments(ap, only_given=True)
    args = ap.parse_args(argv)
    repair_config_from_args(args)  # bad flag values fail before any model is loaded
    loaded = load_models(args.model, args.trust_checkpoint)
    model, patch = loaded.models, loaded.patch
    repair_config, line = chosen_repair(loaded, args)
    inputs = volume_handles(args.input, role="image")
    if len(loaded.models) > 1:
        print(f"ensemble of {len(loaded.models)} models: "
              f"{', '.join(str(c) for c in loaded.checkpoints)}")
    if args.zarr:
        given = repair_config_from_args(args)
        extra = " ".join(given.to_flags().replace(f"--threshold {given.threshold}", "").split())
        if extra:
            raise ValueError(f"--zarr writes p > threshold block by block; the repair steps "
                             f"need whole volumes: drop {extra}")
        args.threshold = repair_config.threshold
        print(f"--zarr: threshold {args.threshold}" + (
            " (the stored one; its other repair steps need whole volumes)"
            if loaded.postprocessing and not args.no_repair else ""))
        return _predict_to_zarr(args, model, patch, inputs)
    print(line)
    if args.region:
        raise ValueError("--region applies to --zarr output")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.probabilities:
        args.probabilities.mkdir(parents=True, exist_ok=True)
    written = []
    for vid, source in tqdm(inputs.items(), desc="predict", unit="vol", disable=None):
        volume = source.open()
        shape = tuple(volume.shape)
        if len(shape) != 3:
            raise ValueError(f"{source.name}: a {len(shape)}-D image {shape}; vesuvius-predict "
                             "takes 3-D volumes (one TIF stack per volume)")
        try:
            window_corners(shape, (patch,) * 3, args.overlap)  # checks size up front
        except ValueError as e:
            raise ValueError(f"{vid}: {e}") from e
        prob = predict_volume(model, volume, (patch,) * 3, overlap=args.overlap,
                              batch_size=args.batch_size, tta=args.tta)
        mask = repair(prob, repair_config)
        out = args.out_dir / f"{vid}.tif"
        _write_tif(out, mask)
        if args.probabilities:
            _write_tif(args.probabilities / f"{vid}.tif", encode_probabilities(
                prob, args.prob_dtype))
        written.append(out)
        print(f"{vid}: {shape} -> {out} (foreground {mask.mean():.1%}, mean p "
              f"{float(np.mean(prob)):.3f})")
    if args.zip:
        with zipfile.ZipFile(args.zip, "w", zipfile.ZIP_DEFLATED) as z:
            for p in written:
                z.write(p, p.name)
        print(f"wrote {args.zip} ({len(written)} files)")
    return 0


def _output_store(path: Path) -> VolumeStore:
    """The output VolumeStore (rank 0 created it if it was missing)."""
    try:
        return VolumeStore.open(path, mode="a")
    except ValueError as e:
        raise ValueError(f"{e}; --zarr writes into a VolumeStore: choose a new folder") from None


def _predict_to_zarr(args: argparse.Namespace, model: torch.nn.Module, patch: int,
                     inputs: dict) -> int:
    from trainer.blockwise import parse_region, predict_to_zarr
    from trainer.distributed import init_distributed

    dist = init_distributed()  # torchrun: each rank takes its own blocks
    try:
        if dist.main and not args.out_dir.exists():
            VolumeStore.create(args.out_dir)
        dist.barrier()  # under torchrun the other ranks open it once rank 0 has made it
        store = _output_store(args.out_dir)
        for vid, source in inputs.items():
            volume = source.open()
            region = parse_region(args.region, tuple(volume.shape))
            shape = tuple(s.stop - s.start for s in region)
            window_corners(tuple(volume.shape), (patch,) * 3, args.overlap)  # size check
            with tqdm(desc=f"predict {vid}", unit="block", disable=None) as bar:
                def tick(done: int, total: int, bar=bar) -> None:
                    bar.total = total
                    bar.update()

                wrote = predict_to_zarr(
                    model, volume, store, vid, (patch,) * 3, region=region, block=args.block,
                    overlap=args.overlap, batch_size=args.batch_size, tta=args.tta,
                    threshold=args.threshold, rank=dist.rank, world=dist.world,
                    device=dist.device, source=f"{args.input}:{vid}", on_block=tick)
            print(f"{vid}: region {shape} -> volume {vid} of {args.out_dir} ({wrote} blocks "
                  f"written by process {dist.rank} of {dist.world}; finished blocks are "
                  "skipped on a rerun)")
        dist.barrier()
    finally:
        dist.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
