"""Sliding-window inference, post-processing and tools/predict.py."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import tifffile
import torch

from trainer.checkpoint import save_checkpoint
from trainer.commands import predict
from trainer.config import Config
from trainer.inference import (
    decode_probabilities,
    encode_probabilities,
    gaussian_weights,
    predict_volume,
    window_corners,
)
from trainer.model import build_model
from vesuvius_data.synthetic import make_volume, write_competition_layout


class Pointwise(torch.nn.Module):
    """logit = 8 * (x - 0.5): position-independent, so stitching must be invisible."""

    def forward(self, x):
        return 8 * (x - 0.5)


def test_windows_cover_every_voxel_and_end_at_the_border():
    shape, patch = (37, 20, 50), (16, 16, 16)
    cover = np.zeros(shape, int)
    for z, y, x in window_corners(shape, patch, 0.5):
        cover[z:z + 16, y:y + 16, x:x + 16] += 1
    assert cover.min() >= 1
    assert max(c[0] for c in window_corners(shape, patch, 0.5)) == 37 - 16
    with pytest.raises(ValueError, match="larger than the volume"):
        window_corners((8, 40, 40), patch, 0.5)
    with pytest.raises(ValueError, match="overlap"):
        window_corners(shape, patch, 1.0)


def test_gaussian_weights_peak_in_the_middle():
    w = gaussian_weights((8, 9, 10))
    assert w.max() == pytest.approx(1.0) and w.min() >= 1e-3
    assert w[0, 4, 5] < w[4, 4, 5] and np.allclose(w, w[::-1, ::-1, ::-1])


@pytest.mark.parametrize("tta", [False, True])
def test_stitched_prediction_equals_whole_volume_prediction(tta):
    image, _ = make_volume((40, 36, 44), seed=5)
    prob = predict_volume(Pointwise(), image, (16, 16, 16), overlap=0.5, batch_size=3,
                          tta=tta, normalize="unit", device="cpu")
    expected = 1 / (1 + np.exp(-8 * (image / 255.0 - 0.5)))
    np.testing.assert_allclose(prob, expected, atol=1e-5)


class Ramp(torch.nn.Module):
    """Logit = the z index inside the window, whatever the input: not flip-equivariant."""

    def forward(self, x):
        z = torch.arange(x.shape[2], dtype=torch.float32).view(1, 1, -1, 1, 1)
        return (z - 2.0).expand_as(x).clone()


def test_tta_averages_logits_not_probabilities():
    image = np.zeros((8, 4, 4), np.uint8)
    prob = predict_volume(Ramp(), image, (8, 4, 4), tta=True, device="cpu")
    # flips along z give logits z - 2 and 5 - z: their mean is 1.5 everywhere
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-1.5)), atol=1e-6)
    mean_of_probs = 0.5 * (1 / (1 + np.exp(-(np.arange(8) - 2.0)))
                           + 1 / (1 + np.exp(-(5.0 - np.arange(8)))))
    assert np.abs(prob[:, 0, 0] - mean_of_probs).max() > 0.05


def test_predict_tool_writes_named_masks_and_a_zip(tmp_path, capsys):
    write_competition_layout(tmp_path / "comp", 2, (32, 32, 32), seed=2)
    cfg = Config(patch_size=16, initial_filters=4, depth=2)
    model = build_model(cfg.model, 4, 2)
    from dataclasses import asdict

    save_checkpoint(tmp_path / "ck.pt", {"model": model.state_dict(), "config": asdict(cfg),
                                         "ema": None})
    src = tmp_path / "comp" / "train_images"
    assert predict.main([str(tmp_path / "ck.pt"), str(src), str(tmp_path / "out"),
                         "--zip", str(tmp_path / "sub.zip"), "--tta",
                         "--probabilities", str(tmp_path / "prob")]) == 0
    for tif in src.glob("*.tif"):
        mask = tifffile.imread(tmp_path / "out" / tif.name)
        assert mask.shape == (32, 32, 32) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1}
        prob = tifffile.imread(tmp_path / "prob" / tif.name)
        clear = np.abs(prob.astype(np.float32) - 0.5) > 1e-3  # float16 rounding at the edge
        assert prob.dtype == np.float16 and np.array_equal(mask[clear], prob[clear] > 0.5)
    with zipfile.ZipFile(tmp_path / "sub.zip") as z:
        assert sorted(z.namelist()) == sorted(p.name for p in src.glob("*.tif"))
    assert predict.main([str(tmp_path / "ck.pt"), str(tmp_path / "nope"),
                         str(tmp_path / "o2")]) == 2
    assert "no such folder" in capsys.readouterr().err
    # the repair flags reach vesuvius_data.repair: the mask is the repair of the probabilities
    flags = ["--threshold", "0.5", "--weak-threshold", "0.4", "--min-component", "3",
             "--dust-connectivity", "6", "--plug", "--patch-area", "8", "--max-cavity", "5"]
    assert predict.main([str(tmp_path / "ck.pt"), str(src), str(tmp_path / "rep"),
                         "--tta", *flags]) == 0
    from vesuvius_data.repair import RepairConfig, repair

    config = RepairConfig(threshold=0.5, weak_threshold=0.4, min_component=3,
                          dust_connectivity=6, plug=True, patch_area=8, max_cavity=5)
    for tif in src.glob("*.tif"):
        prob = tifffile.imread(tmp_path / "prob" / tif.name).astype(np.float32)
        repaired = tifffile.imread(tmp_path / "rep" / tif.name)
        assert (repaired != repair(prob, config)).mean() < 0.001  # float16 rounding only
    assert predict.main([str(tmp_path / "ck.pt"), str(src), str(tmp_path / "o3"),
                         "--threshold", "0.3", "--weak-threshold", "0.5"]) == 2
    assert "must not exceed threshold" in capsys.readouterr().err


def test_probability_encodings_round_trip():
    p = np.linspace(0, 1, 1000, dtype=np.float32).reshape(10, 10, 10)
    for dtype, tol in (("float16", 5e-4), ("uint8", 0.5 / 255 + 1e-7)):
        data = encode_probabilities(p, dtype)
        assert data.dtype == np.dtype(dtype)
        assert np.abs(decode_probabilities(data) - p).max() <= tol
    with pytest.raises(ValueError, match="float or uint8"):
        decode_probabilities(np.zeros(3, np.int32))
