"""Data-parallel training with torchrun: 2 gloo processes x batch 1 train exactly what one
process with batch 2 trains, hard-negative feedback included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.cli import main
from trainer.config import config_from_dict, config_to_yaml
from trainer.verdict import read_metrics
from vesuvius_data import VolumeStore
from vesuvius_data.synthetic import make_volume

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def labeled_store(tmp_path_factory) -> Path:
    """Four 40^3 volumes labelled everywhere (no ignore voxels): then the focal loss of a batch
    of 2 is exactly the mean of two per-sample losses, which is what DDP's gradient averaging
    computes."""
    path = tmp_path_factory.mktemp("ddp") / "store.zarr"
    store = VolumeStore.create(path, chunks=(16, 16, 16))
    for i in range(4):
        image, label = make_volume((40, 40, 40), seed=50 + i)
        store.add_volume(f"v{i}", image, np.where(label == 2, 0, label), scroll_id=f"s{i}")
    return path


def _config(store: Path, tmp_path: Path) -> Path:
    cfg = config_from_dict({
        "data_dir": str(store), "patch_size": 16, "stride": 8, "num_folds": 2,
        "num_workers": 0, "initial_filters": 4, "depth": 2, "epochs": 2,
        "iterations_per_epoch": 3, "val_iterations": 1, "warmup_epochs": 1, "augment": 0.0,
        "sampler": "hard-negative", "metric_every": 0, "early_stopping_patience": 100,
        "loss_weights": {"dice_weight": 0.0, "focal_weight": 1.0, "boundary_weight": 0.0,
                         "cldice_weight": 0.0, "connectivity_weight": 0.0}})
    path = tmp_path / "cfg.yaml"
    path.write_text(config_to_yaml(cfg))
    return path


@pytest.mark.slow
def test_two_ranks_of_batch_1_equal_one_process_of_batch_2(labeled_store, tmp_path):
    cfg = _config(labeled_store, tmp_path)
    assert main(["--config", str(cfg), f"--out={tmp_path / 'one'}", "--batch_size=2"]) == 0
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "trainer", "--config", str(cfg), f"--out={tmp_path / 'two'}", "--batch_size=1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("Epoch 1 |") == 1  # rank 0 alone logs
    one, two = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "two")
    assert two["world"] == 2 and one["world"] == 1 and one["iteration"] == two["iteration"]
    for k in one["model"]:
        torch.testing.assert_close(two["model"][k], one["model"][k], rtol=1e-4, atol=1e-6)
    # hard-negative state, fed by both ranks: rank 1 drew the rows one process drew (else the
    # weights above would differ), and rank 0's saved state equals the one-process state
    np.testing.assert_allclose(two["strategy"]["difficulty"], one["strategy"]["difficulty"],
                               rtol=1e-4, equal_nan=True)
    assert [r["epoch"] for r in read_metrics(tmp_path / "two")] == [0, 1]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir())  # nothing written twice or per rank


def test_resume_with_another_number_of_processes_is_refused(labeled_store, tmp_path, capsys):
    cfg = _config(labeled_store, tmp_path)
    assert main(["--config", str(cfg), f"--out={tmp_path / 'run'}", "--epochs=1"]) == 0
    ck = load_checkpoint(tmp_path / "run")
    ck["world"] = 2
    save_checkpoint(tmp_path / "run" / "last.pt", ck)
    assert main(["--resume", str(tmp_path / "run"), "--epochs=2"]) == 2
    assert "trained on 2 process(es) and is resumed on 1" in capsys.readouterr().err
