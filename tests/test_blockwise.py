"""Scroll-scale prediction into zarr: equal to whole-volume prediction, resumable, split across
processes, and bounded in memory on a lazy volume far larger than RAM would like."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
import zarr

from trainer.blockwise import parse_region, predict_to_zarr
from trainer.checkpoint import save_checkpoint
from trainer.commands import predict
from trainer.config import config_from_dict
from trainer.inference import decode_probabilities, encode_probabilities, predict_volume
from trainer.model import build_model
from vesuvius_data import VolumeStore
from vesuvius_data.synthetic import make_volume

PATCH = (16, 16, 16)


def assert_same_prediction(got_uint8: np.ndarray, want: np.ndarray) -> None:
    """Equal up to float rounding: windows batched differently may differ in the last bits
    (oneDNN picks kernels by batch), so an encoded value may move by one step, rarely."""
    diff = np.abs(got_uint8.astype(int) - encode_probabilities(want, "uint8").astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("unet", 4, 2).eval()


@pytest.fixture(scope="module")
def volume():
    return make_volume((48, 40, 44), seed=7)[0]


@pytest.fixture(scope="module")
def whole(model, volume):
    return predict_volume(model, volume, PATCH, overlap=0.5)


def test_region_prediction_equals_the_whole_volume(model, volume, whole):
    box = (slice(10, 40), slice(23, 40), slice(0, 21))
    part = predict_volume(model, volume, PATCH, overlap=0.5, region=box)
    np.testing.assert_allclose(part, whole[box], rtol=0, atol=1e-6)


def out_store(tmp_path, chunk: int = 16) -> VolumeStore:
    return VolumeStore.create(tmp_path / "out.zarr", chunks=(chunk,) * 3)


def test_blocks_stitch_to_the_whole_volume_in_any_split(model, volume, whole, tmp_path):
    store = out_store(tmp_path)
    assert predict_to_zarr(model, volume, store, "v", PATCH, block=32, rank=1, world=2) == 4
    assert "v" not in store  # half the blocks: not published
    # another process (its own handle on the store) writes the other half and publishes
    other = VolumeStore.open(tmp_path / "out.zarr", mode="a")
    assert predict_to_zarr(model, volume, other, "v", PATCH, block=32, rank=0, world=2) == 4
    store = VolumeStore.open(tmp_path / "out.zarr")
    prob = store.array("v", "prob")[...]
    assert_same_prediction(prob, whole)
    assert ((store.array("v", "label")[...] == 1) != (whole > 0.5)).mean() < 1e-3
    assert np.abs(decode_probabilities(prob) - whole).max() <= 0.5 / 255 + 1e-5
    np.testing.assert_array_equal(store.array("v", "image")[...], volume)
    assert store.array("v", "done")[...].all()
    # a rerun finds the volume finished: nothing is predicted again
    assert predict_to_zarr(model, volume, other, "v", PATCH, block=32) == 0


def test_the_output_is_a_volume_to_index_evaluate_and_train_on(model, volume, tmp_path):
    from vesuvius_data import build_index, make_loader
    from vesuvius_data.commands import evaluate

    store = out_store(tmp_path)
    predict_to_zarr(model, volume, store, "v", PATCH, block=32, source="test")
    assert store.info("v").source == "test" and store.info("v").shape == volume.shape
    index = build_index(store, 16, 16, progress=False)
    mask = store.array("v", "label")[...]
    assert index.volumes["v"]["totals"]["surface"] == int(mask.sum())
    batch = next(iter(make_loader(store, index, "uniform", num_workers=0, samples_per_epoch=2)))
    assert batch["image"].shape == (2, 1, 16, 16, 16)
    # the prediction store scores against itself as a perfect prediction
    assert evaluate.main([str(tmp_path / "out.zarr"), str(tmp_path / "out.zarr"), "--json"]) == 0


def test_a_killed_run_resumes_where_it_stopped(model, volume, whole, tmp_path):
    store = out_store(tmp_path)

    class Killed(Exception):
        pass

    def kill_after_three(done: int, total: int) -> None:
        if done == 3:
            raise Killed

    with pytest.raises(Killed):
        predict_to_zarr(model, volume, store, "v", PATCH, block=32, on_block=kill_after_three)
    done = zarr.open_array(str(tmp_path / "out.zarr" / "volumes" / "v" / "done"))
    assert done[...].sum() == 3 and "v" not in store
    with pytest.raises(ValueError, match="a different block size"):
        predict_to_zarr(model, volume, store, "v", PATCH, block=16)
    assert predict_to_zarr(model, volume, store, "v", PATCH, block=32) == 5
    assert_same_prediction(store.array("v", "prob")[...], whole)


@pytest.mark.slow
def test_a_lazy_1024_cube_predicts_a_region_in_bounded_memory(model, tmp_path):
    """A 1024^3 zarr volume (1 GiB if read whole; most chunks never written): a region at its
    far corner is read window by window, memory stays small, and the result equals predicting
    a crop that holds every window touching the region (the whole volume's window grid)."""
    import psutil

    from vesuvius_data.store import FastArray

    image = zarr.open_array(str(tmp_path / "big.zarr"), mode="w", shape=(1024,) * 3,
                            chunks=(64,) * 3, dtype=np.uint8, fill_value=0)
    image[960:1024, 960:1024, 960:1024] = make_volume((64, 64, 64), seed=3)[0]
    lazy = FastArray(image)
    store = out_store(tmp_path, 64)
    region = parse_region("960:1024,960:1024,960:1024", lazy.shape)
    before = psutil.Process().memory_info().rss
    assert predict_to_zarr(model, lazy, store, "big", PATCH, region=region, block=64) == 1
    assert psutil.Process().memory_info().rss - before < 200 * 2**20  # not the GiB of a read
    crop = predict_volume(model, image[944:1024, 944:1024, 944:1024], PATCH)
    assert_same_prediction(store.array("big", "prob")[...], crop[16:, 16:, 16:])


def test_predict_tool_writes_zarr_and_checks_the_region(model, volume, whole, tmp_path,
                                                        capsys):
    cfg = config_from_dict({"patch_size": 16, "initial_filters": 4, "depth": 2})
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "config": asdict(cfg)})
    store = VolumeStore.create(tmp_path / "s.zarr", chunks=(16, 16, 16))
    label = make_volume((48, 40, 44), seed=7)[1]
    store.add_volume("v", volume, label)
    out = tmp_path / "pred.zarr"
    argv = [str(tmp_path / "m.pt"), str(tmp_path / "s.zarr"), str(out), "--zarr", "--block",
            "64", "--region", "0:48,16:40,:"]
    assert predict.main(argv) == 0
    mask = VolumeStore.open(out).array("v", "label")[...] == 1
    assert (mask != (whole[0:48, 16:40, :] > 0.5)).mean() < 1e-3
    assert "finished blocks are skipped on a rerun" in capsys.readouterr().out
    for bad, message in (("0:48,16:40", "wants z0:z1,y0:y1,x0:x1"),
                         ("0:48,16:90,:", "not a non-empty range inside 0:40")):
        assert predict.main(argv[:-1] + [bad]) == 2
        assert message in capsys.readouterr().err
    assert predict.main(argv[:3] + ["--region", "0:8,0:8,0:8"]) == 2
    assert "--region applies to --zarr" in capsys.readouterr().err
    assert predict.main(argv + ["--sheet-sigma", "1.5", "--max-cavity", "100"]) == 2
    assert "drop --sheet-sigma 1.5 --max-cavity 100" in capsys.readouterr().err  # not ignored
    assert predict.main(argv[:-1] + ["0:32,16:40,:"]) == 2  # another region into the same group
    assert "choose another output" in capsys.readouterr().err


@pytest.mark.slow
def test_two_torchrun_processes_predict_one_published_volume(model, volume, whole, tmp_path):
    """torchrun --nproc_per_node=2 tools/predict.py --zarr: rank 0 creates the store, each rank
    writes its own blocks, the volume is published once and equals whole-volume prediction."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cfg = config_from_dict({"patch_size": 16, "initial_filters": 4, "depth": 2})
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "config": asdict(cfg)})
    src = VolumeStore.create(tmp_path / "s.zarr", chunks=(16, 16, 16))
    src.add_volume("v", volume, make_volume((48, 40, 44), seed=7)[1])
    big = np.tile(volume, (2, 2, 2))[:96, :80, :88]  # 2x2x2 blocks of 64: both ranks work
    src.add_volume("w", big, np.zeros(big.shape, np.uint8))
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "tools/predict.py", str(tmp_path / "m.pt"), str(tmp_path / "s.zarr"),
         str(tmp_path / "out.zarr"), "--zarr", "--block", "64"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "written by process 1 of 2" in proc.stdout
    out = VolumeStore.open(tmp_path / "out.zarr")
    assert out.ids() == ["v", "w"]
    assert_same_prediction(out.array("v", "prob")[...], whole)
    assert_same_prediction(out.array("w", "prob")[...], predict_volume(model, big, PATCH))
