"""Scroll-scale prediction of a whole lazy 1024^3 volume: peak memory, kill -9 and resume;
prints JSON. ``--competition``: the time of one competition volume instead.

    python benchmarks/bench_predict.py [--side 1024] [--block 256] [--patch 64]
    python benchmarks/bench_predict.py --competition [--config cpu_budget] [--tta]

``--competition`` predicts one synthetic 320^3 volume as ``vesuvius-predict`` does (overlap
0.5, Gaussian blending) with a model of the config's size (random weights: time does not
depend on them) on the GPU when there is one, then repairs it with the yardstick's chosen
post-processing (``--sheet-sigma 2.5 --threshold 0.6 --max-cavity 100``): seconds for each,
which is what a Kaggle notebook pays per test volume.

A 1024^3 uint8 zarr volume (1 GiB if read whole) holds synthetic scroll data in one corner
and nothing elsewhere (never-written chunks read as zeros, as in a sparse scroll scan). A tiny
U-Net (4 filters, depth 2; the figures are about memory and bookkeeping, not the model)
predicts all of it into a VolumeStore with ``predict_to_zarr`` (overlap 0: ~10 minutes on 2
cores; memory is set by the block, not the overlap) in a child
process, which is killed with SIGKILL once a third of the blocks are done; a second child
resumes. Reported: peak RSS of each child (sampled every 50 ms), blocks written by each (the
resume must write only what the first left), seconds, and whether the volume was published.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import sys, torch, zarr, json
from trainer.blockwise import predict_to_zarr
from trainer.model import build_model
from vesuvius_data import VolumeStore
from vesuvius_data.store import FastArray
src, out, block, patch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
torch.set_num_threads(2)
model = build_model("unet", 4, 2).eval()
volume = FastArray(zarr.open_array(src, mode="r"))
store = VolumeStore.open(out, mode="a")
def tick(done, total):
    print(f"block {done} {total}", flush=True)
n = predict_to_zarr(model, volume, store, "big", (patch,) * 3, block=block, overlap=0.0,
                    batch_size=4, on_block=tick)
print(json.dumps({"written": n}), flush=True)
"""


def _run_child(args: list[str], kill_after: int | None) -> dict:
    """Run the child, sampling its peak RSS; SIGKILL it after ``kill_after`` blocks."""
    import psutil

    root = Path(__file__).resolve().parents[1]
    env = os.environ | {"PYTHONPATH": str(root)}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=root)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    ps, peak, written = psutil.Process(proc.pid), 0, None
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if kill_after is not None and sum(ln.startswith("block ") for ln in lines) >= kill_after:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    reader.join()
    for line in lines:
        if line.startswith("{"):
            written = json.loads(line)["written"]
    buffer = "".join(lines)
    return {"peak_rss_mb": peak / 2**20, "blocks_reported": buffer.count("block "),
            "written": written, "seconds": time.perf_counter() - t,
            "killed": proc.returncode == -signal.SIGKILL}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--competition", action="store_true",
                    help="time one 320^3 volume, predicted and repaired")
    ap.add_argument("--config", default="cpu_budget", help="with --competition: whose model")
    ap.add_argument("--tta", action="store_true", help="with --competition: 8 flips")
    args = ap.parse_args(argv)
    if args.competition:
        return _competition(args.config, args.tta)
    import zarr

    from vesuvius_data import VolumeStore
    from vesuvius_data.synthetic import make_volume

    tmp = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    try:
        n = args.side
        image = zarr.open_array(str(tmp / "big.zarr"), mode="w", shape=(n,) * 3,
                                chunks=(64,) * 3, dtype=np.uint8, fill_value=0)
        image[:256, :256, :256] = make_volume((256,) * 3, seed=1)[0]
        VolumeStore.create(tmp / "out.zarr")
        total = (-(-n // args.block)) ** 3
        child = [str(tmp / "big.zarr"), str(tmp / "out.zarr"), str(args.block), str(args.patch)]
        first = _run_child(child, kill_after=max(total // 3, 1))
        second = _run_child(child, kill_after=None)
        out = VolumeStore.open(tmp / "out.zarr")
        print(json.dumps({
            "setup": {"shape": [n] * 3, "block": args.block, "blocks": total,
                      "patch": args.patch, "overlap": 0.0, "model": "unet f4 d2",
                      "input_gib_if_read_whole": n**3 / 2**30},
            "killed_run": first, "resumed_run": second,
            "resume_wrote_only_the_rest": second["written"] == total - first["blocks_reported"],
            "published": "big" in out,
        }, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _competition(config: str, tta: bool) -> int:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from trainer.config import load_config
    from trainer.inference import predict_volume
    from trainer.model import build_model
    from vesuvius_data.repair import RepairConfig, repair
    from vesuvius_data.synthetic import make_volume

    cfg = load_config(config)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_model(cfg.model, cfg.initial_filters, cfg.depth, cfg.deep_supervision).eval()
    image = make_volume((320,) * 3, seed=5, preset="hard")[0]
    predict_volume(model, image[:cfg.patch_size * 2, :cfg.patch_size * 2,
                                :cfg.patch_size * 2], (cfg.patch_size,) * 3, device=device)
    t = time.perf_counter()  # after a warm-up (cuDNN autotuning, lazy allocations)
    prob = predict_volume(model, image, (cfg.patch_size,) * 3, overlap=0.5, batch_size=4,
                          tta=tta, device=device)
    predict_s = time.perf_counter() - t
    t = time.perf_counter()
    repair(prob, RepairConfig(sheet_sigma=2.5, threshold=0.6, max_cavity=100))
    repair_s = time.perf_counter() - t
    print(json.dumps({"config": config, "device": torch.cuda.get_device_name() if
                      device == "cuda" else f"cpu ({os.cpu_count()} cores)",
                      "patch": cfg.patch_size, "tta": tta, "predict_s": predict_s,
                      "repair_s": repair_s, "total_s": predict_s + repair_s}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
