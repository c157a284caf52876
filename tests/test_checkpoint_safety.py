"""Checkpoints are data: loading one never runs code it carries, old checkpoints still load."""

from __future__ import annotations

import fractions
import pickle
from dataclasses import asdict

import numpy as np
import pytest
import torch
from test_faults import one_error_line, quiet, tiny_cfg

from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.commands import predict
from trainer.model import build_model
from trainer.train import train


class _Payload:
    """What a crafted file carries: unpickling it would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


def _model_state(store_path, tmp_path) -> dict:
    cfg = tiny_cfg(store_path, tmp_path / "run")
    model = build_model(cfg.model, cfg.initial_filters, cfg.depth, cfg.deep_supervision)
    return {"model": model.state_dict(), "config": asdict(cfg), "epoch": 0}


@pytest.mark.parametrize("legacy_format", [False, True])
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(store, tmp_path, capsys,
                                                         legacy_format):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    state = _model_state(store.location, tmp_path) | {"extra": _Payload(marker)}
    if legacy_format:  # a plain pickle, not torch's zip layout
        evil.write_bytes(pickle.dumps(state))
    else:
        torch.save(state, evil)
    assert not marker.exists()
    with pytest.raises(ValueError, match="refused"):
        load_checkpoint(evil)
    assert predict.main([str(evil), store.location, str(tmp_path / "out")]) == 2
    line = one_error_line(capsys)
    assert str(evil) in line and "--trust-checkpoint" in line
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_trust_loads_a_file_the_user_vouches_for(store, tmp_path):
    path = tmp_path / "odd.pt"
    torch.save(_model_state(store.location, tmp_path) | {"note": fractions.Fraction(1, 3)}, path)
    with pytest.raises(ValueError, match="fractions.Fraction"):
        load_checkpoint(path)
    assert load_checkpoint(path, trust=True)["note"] == fractions.Fraction(1, 3)


def test_checkpoints_of_the_old_layout_with_numpy_arrays_still_load(store, tmp_path):
    old = _model_state(store.location, tmp_path) | {
        "strategy": {"name": "hard-negative", "difficulty": np.ones(5, np.float32),
                     "candidates": np.arange(5)},
        "health_losses": [np.float64(0.5)], "best_score": np.float64(0.7)}
    torch.save(old, tmp_path / "old.pt")
    ck = load_checkpoint(tmp_path / "old.pt")
    np.testing.assert_array_equal(ck["strategy"]["candidates"], np.arange(5))
    assert ck["best_score"] == 0.7


def test_new_checkpoints_hold_only_tensors_and_plain_types(store, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_cfg(store.location, run, epochs=1, sampler="hard-negative")
    assert train(cfg, log=quiet) == 0
    assert torch.serialization.get_unsafe_globals_in_checkpoint(run / "last.pt") == []
    ck = load_checkpoint(run)
    assert isinstance(ck["strategy"]["difficulty"], torch.Tensor)
    resumed = tiny_cfg(store.location, run, epochs=2, sampler="hard-negative")
    assert train(resumed, resume=str(run), log=quiet) == 0  # tensors go back into the strategy


def test_save_checkpoint_round_trips(tmp_path):
    save_checkpoint(tmp_path / "x.pt", {"model": {}, "config": {"a": [1, 2.5, None, "s"]}})
    assert load_checkpoint(tmp_path / "x.pt")["config"] == {"a": [1, 2.5, None, "s"]}
