"""Mixed precision: the choice per GPU (a faked capability plays a T4) and the gradient
scaler's wiring into the training step and the checkpoint (run on the CPU)."""

from __future__ import annotations

import pytest
import torch
from test_faults import quiet, tiny_cfg

from trainer import train as train_module
from trainer.amp import Precision, resolve_precision
from trainer.checkpoint import load_checkpoint
from trainer.config import Config, check_names

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize("setting, native, expect", [
    ("auto", True, (torch.bfloat16, False)),   # A100 / H100: bf16, no scaler
    ("auto", False, (torch.float16, True)),    # T4 / P100: fp16 with a scaler
    (True, False, (torch.float16, True)),      # configs from before the modes: true = auto
    ("fp16", True, (torch.float16, True)),
    ("bf16", True, (torch.bfloat16, False)),
    ("off", True, (None, False)),
    (False, True, (None, False)),
])
def test_the_precision_each_gpu_gets(setting, native, expect):
    p = resolve_precision(setting, CUDA, bf16_native=native)
    assert (p.dtype, p.scaled) == expect


def test_bf16_on_a_gpu_without_it_and_unknown_modes_are_errors():
    with pytest.raises(ValueError, match="no native bf16"):
        resolve_precision("bf16", CUDA, bf16_native=False)
    with pytest.raises(ValueError, match="amp must be one of auto, bf16, fp16, off"):
        check_names(Config(amp="fp8"))


def test_the_cpu_always_runs_fp32():
    for setting in ("auto", "bf16", "fp16", "off"):
        p = resolve_precision(setting, torch.device("cpu"), bf16_native=True)
        assert p == Precision(None, False) and p.name == "fp32"


def test_the_gradient_scaler_drives_the_step_and_is_checkpointed(store, tmp_path, monkeypatch):
    """fp16's scaler, enabled on the CPU: the loss is scaled, the step unscales before
    clipping, and the scale travels through checkpoints and resume."""
    scaled = Precision(None, True)  # fp32 compute, but every step goes through the scaler
    monkeypatch.setattr(train_module, "resolve_precision", lambda *a, **k: scaled)
    steps = []
    real_step = torch.amp.GradScaler.step
    monkeypatch.setattr(torch.amp.GradScaler, "step",
                        lambda self, opt, *a, **k: steps.append(self.get_scale()) or
                        real_step(self, opt, *a, **k))
    run = tmp_path / "run"
    assert train_module.train(tiny_cfg(store.location, run, epochs=1), log=quiet) == 0
    assert len(steps) == 2 and steps[0] == 65536.0  # torch's initial scale: the scaler is live
    ck = load_checkpoint(run)
    assert ck["scaler"]["scale"] == 65536.0 and ck["scaler"]["_growth_tracker"] == 2
    assert train_module.train(tiny_cfg(store.location, run, epochs=2), resume=str(run),
                              log=quiet) == 0
    assert load_checkpoint(run)["scaler"]["_growth_tracker"] == 4  # restored, then grown
