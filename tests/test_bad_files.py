"""Damaged files that reached users as tracebacks or anonymous messages, each now one line
naming the file (issue 26's four, found by hand)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import tifffile
from test_faults import one_error_line, tiny_cfg

from trainer.checkpoint import save_checkpoint
from trainer.cli import main as train_main
from trainer.commands import predict
from trainer.model import build_model
from vesuvius_data import build_index
from vesuvius_data.commands import index, strategies


def test_a_config_with_a_yaml_syntax_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data_dir: [unclosed\n")
    assert train_main(["--config", str(bad)]) == 2
    assert f"{bad}: not valid YAML at line" in one_error_line(capsys)


def test_a_truncated_index(store, tmp_path, capsys):
    good = tmp_path / "i.npz"
    build_index(store, 16, 8, progress=False).save(good)
    cut = tmp_path / "t.npz"
    cut.write_bytes(good.read_bytes()[:100])
    assert strategies.main([str(cut), "--store", store.location]) == 2
    assert f"{cut}: not a readable PatchIndex (BadZipFile" in one_error_line(capsys)


def test_a_store_whose_root_metadata_is_cut_short(store, capsys):
    meta = f"{store.location}/zarr.json"
    with open(meta, "rb") as f:
        data = f.read()
    with open(meta, "wb") as f:
        f.write(data[:57])
    assert index.main([store.location, "--patch-size", "16"]) == 2
    line = one_error_line(capsys)
    assert f"{store.location}: unreadable store metadata ({meta}: JSONDecodeError" in line


def test_a_2d_tif_among_the_volumes_to_predict(store, tmp_path, capsys):
    cfg = tiny_cfg(store.location, tmp_path / "run")
    model = build_model(cfg.model, cfg.initial_filters, cfg.depth, cfg.deep_supervision)
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "config": asdict(cfg)})
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "x.tif", np.zeros((32, 32), np.uint8))
    assert predict.main([str(tmp_path / "m.pt"), str(images), str(tmp_path / "out")]) == 2
    assert f"{images / 'x.tif'}: a 2-D image (32, 32); vesuvius-predict takes 3-D" in \
        one_error_line(capsys)
