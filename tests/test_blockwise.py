"""Scroll-scale prediction into zarr: equal to whole-volume prediction, resumable, split across
processes, and bounded in memory on a lazy volume far larger than RAM would like."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
import zarr

from tools import predict
from trainer.blockwise import parse_region, predict_to_zarr
from trainer.checkpoint import save_checkpoint
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


def test_blocks_stitch_to_the_whole_volume_in_any_split(model, volume, whole, tmp_path):
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="w")
    assert predict_to_zarr(model, volume, group, "v", PATCH, block=32, rank=1, world=2) == 4
    assert predict_to_zarr(model, volume, group, "v", PATCH, block=32, rank=0, world=2) == 4
    prob = decode_probabilities(group["v/prob"][...])
    assert_same_prediction(group["v/prob"][...], whole)
    assert ((group["v/mask"][...] == 1) != (whole > 0.5)).mean() < 1e-3
    assert np.abs(prob - whole).max() <= 0.5 / 255 + 1e-5
    assert group["v/done"][...].all()
    # a rerun finds every block done: nothing is predicted again
    assert predict_to_zarr(model, volume, group, "v", PATCH, block=32) == 0


def test_a_killed_run_resumes_where_it_stopped(model, volume, whole, tmp_path):
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="w")

    class Killed(Exception):
        pass

    def kill_after_three(done: int, total: int) -> None:
        if done == 3:
            raise Killed

    with pytest.raises(Killed):
        predict_to_zarr(model, volume, group, "v", PATCH, block=32, on_block=kill_after_three)
    assert group["v/done"][...].sum() == 3
    assert predict_to_zarr(model, volume, group, "v", PATCH, block=32) == 5
    assert_same_prediction(group["v/prob"][...], whole)


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
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="w")
    region = parse_region("960:1024,960:1024,960:1024", lazy.shape)
    before = psutil.Process().memory_info().rss
    assert predict_to_zarr(model, lazy, group, "big", PATCH, region=region, block=64) == 1
    assert psutil.Process().memory_info().rss - before < 200 * 2**20  # not the GiB of a read
    crop = predict_volume(model, image[944:1024, 944:1024, 944:1024], PATCH)
    assert_same_prediction(group["big/prob"][...], crop[16:, 16:, 16:])


def test_predict_tool_writes_zarr_and_checks_the_region(model, volume, whole, tmp_path,
                                                        capsys):
    cfg = config_from_dict({"patch_size": 16, "initial_filters": 4, "depth": 2})
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "config": asdict(cfg)})
    store = VolumeStore.create(tmp_path / "s.zarr", chunks=(16, 16, 16))
    label = make_volume((48, 40, 44), seed=7)[1]
    store.add_volume("v", volume, label)
    out = tmp_path / "pred.zarr"
    argv = [str(tmp_path / "m.pt"), str(tmp_path / "s.zarr"), str(out), "--zarr", "--block",
            "32", "--region", "0:48,16:40,:"]
    assert predict.main(argv) == 0
    mask = zarr.open_group(str(out))["v/mask"][...] == 1
    assert (mask != (whole[0:48, 16:40, :] > 0.5)).mean() < 1e-3
    assert "finished blocks are skipped on a rerun" in capsys.readouterr().out
    for bad, message in (("0:48,16:40", "wants z0:z1,y0:y1,x0:x1"),
                         ("0:48,16:90,:", "not a non-empty range inside 0:40")):
        assert predict.main(argv[:-1] + [bad]) == 2
        assert message in capsys.readouterr().err
    assert predict.main(argv[:3] + ["--region", "0:8,0:8,0:8"]) == 2
    assert "--region applies to --zarr" in capsys.readouterr().err
    assert predict.main(argv[:-1] + ["0:32,16:40,:"]) == 2  # another region into the same group
    assert "choose another output" in capsys.readouterr().err
