"""Post-processing that travels with the model, cross-validation into a model folder, fold
ensembles in vesuvius-predict, and a one-line error for every bad model folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from test_faults import one_error_line

from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.commands import crossval, predict
from trainer.inference import decode_probabilities, predict_volume
from trainer.model_folder import load_models
from trainer.postprocessing import read_postprocessing
from trainer.train import train
from vesuvius_data import VolumeStore
from vesuvius_data.normalize import NORMALIZERS
from vesuvius_data.repair import RepairConfig, repair
from vesuvius_data.synthetic import make_volume

FAST_LOSS = {"dice_weight": 0.4, "focal_weight": 0.6, "boundary_weight": 0.0,
             "cldice_weight": 0.0, "connectivity_weight": 0.0}
TINY = ["--patch_size=16", "--stride=8", "--num_folds=2", "--num_workers=0",
        "--initial_filters=4", "--depth=2", "--epochs=2", "--iterations_per_epoch=3",
        "--val_iterations=1", "--warmup_epochs=1", "--augment=0", "--metric_every=1",
        "--postprocess_search=quick", f"--loss_weights={json.dumps(FAST_LOSS)}"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """Four 48^3 volumes of four scrolls, and a 2-fold cross-validation of a tiny model."""
    root = tmp_path_factory.mktemp("crossval")
    store = VolumeStore.create(root / "store.zarr", chunks=(16, 16, 16))
    for i in range(4):
        store.add_volume(f"v{i}", *make_volume((48, 48, 48), seed=30 + i), scroll_id=f"s{i}")
    argv = [f"--data_dir={store.location}", f"--out={root / 'model'}", *TINY]
    assert crossval.main(argv) == 0
    return store, root / "model", argv


def test_crossval_writes_a_model_folder_of_out_of_fold_results(model_folder):
    store, model, _ = model_folder
    record = json.loads((model / "crossval.json").read_text())
    assert record["folds"] == [0, 1]
    val = record["val_ids"]
    assert sorted(val["0"] + val["1"]) == store.ids() and not set(val["0"]) & set(val["1"])
    assert sorted(p.stem for p in (model / "oof").glob("*.tif")) == store.ids()
    rows = {str(r["fold"]): r for r in record["out_of_fold"]}
    assert set(rows) == {"0", "1", "all"} and rows["all"]["volumes"] == 4
    assert 0 <= rows["all"]["score"] <= 1
    pp = read_postprocessing(model / "postprocessing.json")
    assert pp.tuned_on == store.ids() and "out-of-fold" in pp.source
    assert pp.score >= pp.threshold_only - 1e-3  # the search includes the plain threshold
    assert "| all | 4 |" in (model / "crossval.md").read_text()
    # out-of-fold: each volume was predicted by the model that did not train on it
    vid = val["1"][0]
    ck = load_checkpoint(model / "fold_1" / "best.pt")
    assert ck["val_ids"] == val["1"]
    m = load_models([model / "fold_1" / "best.pt"]).models
    expect = predict_volume(m, np.asarray(store.image(vid)), (16,) * 3, overlap=0.5)
    got = decode_probabilities(tifffile.imread(model / "oof" / f"{vid}.tif"))
    np.testing.assert_allclose(got, expect, atol=1e-3)
    # folds skip post-processing of their own: the folder's is tuned on all of them
    assert not (model / "fold_0" / "postprocessing.json").exists()


def test_crossval_resumes_without_redoing_work(model_folder, capsys):
    _, model, argv = model_folder
    stamps = {p: p.stat().st_mtime_ns for p in (model / "oof").glob("*.tif")}
    assert crossval.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("nothing left to train") == 2
    assert {p: p.stat().st_mtime_ns for p in (model / "oof").glob("*.tif")} == stamps
    assert crossval.main([*argv, "--epochs=3"]) == 2  # another plan for this folder
    assert "planned with another config (differs in epochs)" in one_error_line(capsys)


def test_predict_ensembles_the_folds_and_applies_the_folder_postprocessing(model_folder,
                                                                          tmp_path, capsys):
    store, model, _ = model_folder
    out = tmp_path / "out"
    assert predict.main([str(model), store.location, str(out),
                         "--probabilities", str(tmp_path / "p")]) == 0
    text = capsys.readouterr().out
    assert "ensemble of 2 models" in text
    assert f"post-processing stored with the model ({model / 'postprocessing.json'})" in text
    pp = read_postprocessing(model / "postprocessing.json")
    vid = store.ids()[0]
    members = load_models([model]).models
    prob = predict_volume(members, np.asarray(store.image(vid)), (16,) * 3, overlap=0.5)
    stored = decode_probabilities(tifffile.imread(tmp_path / "p" / f"{vid}.tif"))
    np.testing.assert_allclose(stored, prob, atol=1e-3)
    np.testing.assert_array_equal(tifffile.imread(out / f"{vid}.tif"), repair(prob, pp.repair))
    # a flag overrides its field only; --no-repair drops the stored config
    assert predict.main([str(model), store.location, str(tmp_path / "o2"),
                         "--threshold", "0.9"]) == 0
    assert "flags given override threshold" in capsys.readouterr().out
    assert predict.main([str(model), store.location, str(tmp_path / "o3"), "--no-repair"]) == 0
    assert "post-processing: --threshold 0.5 (--no-repair)" in capsys.readouterr().out
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o3" / f"{vid}.tif"),
                                  (prob > 0.5).astype(np.uint8))


def test_an_ensemble_averages_logits_per_window():
    torch.manual_seed(0)
    a, b = torch.nn.Conv3d(1, 1, 3, padding=1), torch.nn.Conv3d(1, 1, 3, padding=1)
    x = np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32)
    one_window = {"overlap": 0.0, "gaussian": False}
    both = predict_volume([a, b], x, (16,) * 3, **one_window)
    with torch.no_grad():
        t = torch.from_numpy(NORMALIZERS["zscore"](x))[None, None]
        expect = torch.sigmoid((a(t) + b(t)) / 2)[0, 0].numpy()
    np.testing.assert_allclose(both, expect, atol=1e-6)
    np.testing.assert_allclose(predict_volume([a, a], x, (16,) * 3, **one_window),
                               predict_volume(a, x, (16,) * 3, **one_window), atol=1e-6)


def test_a_run_validated_by_the_metric_stores_its_postprocessing(model_folder, tmp_path,
                                                                 capsys):
    store, model, _ = model_folder
    from trainer.config import config_from_dict

    cfg = config_from_dict({"data_dir": store.location, "out": str(tmp_path / "run"),
                            "patch_size": 16, "stride": 8, "num_folds": 2, "num_workers": 0,
                            "initial_filters": 4, "depth": 2, "epochs": 2,
                            "iterations_per_epoch": 3, "val_iterations": 1,
                            "warmup_epochs": 1, "augment": 0.0, "metric_every": 1,
                            "postprocess_search": "quick", "loss_weights": FAST_LOSS})
    assert train(cfg) == 0
    out = capsys.readouterr().out
    assert "post-processing: " in out and "vesuvius-predict applies it by default" in out
    pp = read_postprocessing(tmp_path / "run" / "postprocessing.json")
    assert load_checkpoint(tmp_path / "run" / "best.pt")["postprocessing"] == pp.to_dict()
    assert pp.tuned_on == load_checkpoint(tmp_path / "run")["val_ids"]
    # the checkpoint alone carries it too (copied away from its run folder)
    shutil.copy(tmp_path / "run" / "best.pt", tmp_path / "alone.pt")
    assert load_models([tmp_path / "alone.pt"]).postprocessing == pp
    assert load_models([tmp_path / "run"]).postprocessing == pp
    # a checkpoint without one behaves as before: threshold 0.5
    ck = load_checkpoint(tmp_path / "alone.pt")
    del ck["postprocessing"]
    save_checkpoint(tmp_path / "bare.pt", ck)
    assert predict.main([str(tmp_path / "bare.pt"), store.location, str(tmp_path / "o")]) == 0
    assert "post-processing: --threshold 0.5 (no stored post-processing)" in \
        capsys.readouterr().out


# ---------------------------------------------------------------------------- bad folders
def _copy(model: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "m"
    shutil.copytree(model, dst, ignore=shutil.ignore_patterns("oof"))
    return dst


def _fails(capsys, store, model, *extra) -> str:
    assert predict.main([str(model), store.location, str(model.parent / "o"), *extra]) == 2
    return one_error_line(capsys)


def test_bad_model_folders_are_one_line_errors_naming_the_file(model_folder, tmp_path,
                                                               capsys):
    store, model, _ = model_folder
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"{empty}: no checkpoint here" in _fails(capsys, store, empty)

    m = _copy(model, tmp_path / "a")
    shutil.rmtree(m / "fold_1")
    assert f"{m / 'crossval.json'} lists fold_1, missing from {m}" in _fails(capsys, store, m)

    m = _copy(model, tmp_path / "b")
    ck = load_checkpoint(m / "fold_1" / "best.pt")
    ck["config"]["patch_size"] = 24
    save_checkpoint(m / "fold_1" / "best.pt", ck)
    line = _fails(capsys, store, m)
    assert f"{m / 'fold_1' / 'best.pt'}: patch size 24, but" in line

    m = _copy(model, tmp_path / "c")
    ck = load_checkpoint(m / "fold_1" / "best.pt")
    ck["label_spec"] = {"background": 0, "foreground": 1, "ignore": 255}
    save_checkpoint(m / "fold_1" / "best.pt", ck)
    assert f"{m / 'fold_1' / 'best.pt'}: label convention" in _fails(capsys, store, m)

    m = _copy(model, tmp_path / "d")
    pp = json.loads((m / "postprocessing.json").read_text())
    pp["repair"]["treshold"] = 0.4
    (m / "postprocessing.json").write_text(json.dumps(pp))
    line = _fails(capsys, store, m)
    assert f"{m / 'postprocessing.json'}: unknown post-processing key(s) repair.treshold" in line

    m = _copy(model, tmp_path / "e")
    pp["repair"] = {"threshold": "high"}
    (m / "postprocessing.json").write_text(json.dumps(pp))
    assert f"{m / 'postprocessing.json'}: bad post-processing config" in \
        _fails(capsys, store, m)
    (m / "postprocessing.json").write_text("{not json")
    assert f"{m / 'postprocessing.json'}: unreadable" in _fails(capsys, store, m)
    (m / "crossval.json").write_text('{"folds": 2}')
    assert f"{m / 'crossval.json'}: unreadable (ValueError: no list of folds)" in \
        _fails(capsys, store, m)


def test_repair_config_defaults_are_what_a_bare_model_gets():
    assert RepairConfig().to_flags() == "--threshold 0.5"
