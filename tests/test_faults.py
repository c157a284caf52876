"""The fault matrix: damaged stores, bad inputs, reused run folders and kills, each met by a
named error or an intact result (never a traceback for a user's mistake, never mixed runs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.cli import main as train_main
from trainer.commands import predict
from trainer.config import config_from_dict, config_to_yaml
from trainer.model import build_model
from trainer.train import train
from trainer.verdict import read_metrics
from vesuvius_data import PatchIndex, VolumeStore, build_index, make_loader
from vesuvius_data.cli import message, user_errors
from vesuvius_data.commands import derive, evaluate, index, ingest, synth, verify
from vesuvius_data.store.chunk_reader import ChunkReader
from vesuvius_data.store.competition import ingest_competition, read_tif
from vesuvius_data.store.integrity import RECORD_KEY, ChunkError
from vesuvius_data.synthetic import make_volume, write_competition_layout

ROOT = Path(__file__).resolve().parents[1]
FAST_LOSS = {"dice_weight": 0.4, "focal_weight": 0.6, "boundary_weight": 0.0,
             "cldice_weight": 0.0, "connectivity_weight": 0.0}


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    """Three 32^3 volumes in the competition layout."""
    src = tmp_path_factory.mktemp("faults") / "competition"
    write_competition_layout(src, 3, (32, 32, 32), seed=5, progress=False)
    return src


@pytest.fixture
def store(tmp_path, layout) -> VolumeStore:
    """The layout ingested into a fresh store of 16^3 chunks (8 chunks per array)."""
    s = VolumeStore.create(tmp_path / "store.zarr", chunks=(16, 16, 16))
    report = ingest_competition(layout, s, progress=False)
    assert not report.failed
    return VolumeStore.open(s.location)


def chunk_file(store: VolumeStore, vid: str, role: str, key: str = "c/0/1/0") -> Path:
    return Path(store.location) / "volumes" / vid / role / key


def corrupt(path: Path) -> None:
    """Random bytes of another size: what a torn copy or a bad sector leaves."""
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size // 2 + 7))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def tiny_cfg(store_path: Path, out: Path, **kw):
    base = config_from_dict({
        "data_dir": str(store_path), "out": str(out), "patch_size": 16, "stride": 8,
        "num_folds": 2, "num_workers": 0, "initial_filters": 4, "depth": 2, "epochs": 2,
        "iterations_per_epoch": 2, "val_iterations": 1, "warmup_epochs": 1, "augment": 0.0,
        "metric_every": 0, "early_stopping_patience": 100, "loss_weights": FAST_LOSS})
    return config_from_dict(kw, base)


def quiet(_: str) -> None:
    pass


# ---------------------------------------------------------------------------- damaged chunks
def test_intact_store_verifies_and_reads(store, capsys):
    report = store.verify(deep=True)
    assert report.ok and report.volumes == 3 and report.chunks > 0 and not report.unrecorded
    assert verify.main([store.location]) == 0
    assert "intact" in capsys.readouterr().out


def test_record_lists_every_written_chunk(store):
    arr = store.zarr_array(store.ids()[0], "label")
    record = arr.attrs[RECORD_KEY]
    assert record["grid"] == 8
    on_disk = sorted(str(p.relative_to(chunk_file(store, store.ids()[0], "label", "")))
                     for p in chunk_file(store, store.ids()[0], "label", "c").rglob("*")
                     if p.is_file())
    assert sorted(record["stored"]) == on_disk


def test_corrupt_label_chunk_names_volume_array_and_chunk(store):
    vid = store.ids()[0]
    corrupt(chunk_file(store, vid, "label"))
    with pytest.raises(ChunkError, match=rf"volume '{vid}', array 'label', chunk c/0/1/0.*"
                       rf"re-ingest volume '{vid}'"):
        np.asarray(store.label(vid))


def test_missing_label_chunk_is_an_error_not_background(store):
    vid = store.ids()[1]
    chunk_file(store, vid, "label").unlink()
    with pytest.raises(ChunkError, match="chunk c/0/1/0.*missing"):
        store.array(vid, "label")[0:16, 16:32, 0:16]
    # a chunk that is not touched still reads
    assert store.array(vid, "label")[0:16, 0:16, 0:16].shape == (16, 16, 16)


def test_undecodable_chunk_with_unchanged_size_is_named(store):
    vid = store.ids()[0]
    path = chunk_file(store, vid, "image")
    path.write_bytes(b"\0" * path.stat().st_size)  # same size, no Blosc header
    with pytest.raises(ChunkError, match="array 'image', chunk c/0/1/0.*cannot be decoded"):
        np.asarray(store.image(vid))


def test_general_reader_path_checks_too(store):
    vid = store.ids()[0]
    chunk_file(store, vid, "label").unlink()
    reader = ChunkReader(store.zarr_array(vid, "label"), fast=False)
    assert not reader.fast
    with pytest.raises(ChunkError, match="missing"):
        reader.read((0, 1, 0))
    corrupt(chunk_file(store, vid, "label", "c/1/1/1"))
    with pytest.raises(ChunkError, match="cannot be decoded"):
        reader.read((1, 1, 1))


def test_verify_lists_missing_resized_unexpected_and_bitflipped(store, capsys):
    a, b, c = store.ids()
    chunk_file(store, a, "label").unlink()
    corrupt(chunk_file(store, b, "image", "c/1/0/0"))
    extra = chunk_file(store, c, "label", "c/9/9/9")
    extra.parent.mkdir(parents=True)
    extra.write_bytes(b"stray")
    flip = chunk_file(store, c, "image", "c/1/1/1")
    data = bytearray(flip.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only a checksum sees it
    flip.write_bytes(bytes(data))
    shallow = {(p.volume_id, p.role, p.key): p.problem for p in store.verify().problems}
    assert shallow[(a, "label", "c/0/1/0")] == "missing"
    assert "bytes, recorded" in shallow[(b, "image", "c/1/0/0")]
    assert "not recorded" in shallow[(c, "label", "c/9/9/9")]
    assert (c, "image", "c/1/1/1") not in shallow
    deep = {(p.volume_id, p.role, p.key): p.problem for p in store.verify(deep=True).problems}
    assert "checksum" in deep[(c, "image", "c/1/1/1")]
    assert verify.main([store.location, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["damaged_volumes"] == sorted([a, b, c]) and "--ids" in out["repair"][a]


def test_verify_reports_a_deleted_array(store):
    vid = store.ids()[0]
    import shutil

    shutil.rmtree(Path(store.location) / "volumes" / vid / "label")
    problems = store.verify().problems
    assert [(p.volume_id, p.role, p.problem) for p in problems] == [(vid, "label",
                                                                     "array missing")]


def test_index_build_stops_on_census_mismatch_for_unrecorded_arrays(store):
    """Stores written before chunk records: a lost chunk reads as zeros, and the census that
    the store took at ingest is what catches it."""
    vid = store.ids()[0]
    rw = VolumeStore.open(store.location, mode="a")
    del rw.zarr_array(vid, "label").attrs[RECORD_KEY]
    label = np.asarray(store.label(vid))
    key = next(k for k in ("c/0/0/0", "c/0/1/0", "c/1/0/0", "c/1/1/0")
               if (label[tuple(slice(int(i) * 16, int(i) * 16 + 16) for i in k.split("/")[1:])]
                   != 0).any())
    chunk_file(store, vid, "label", key).unlink()
    with pytest.raises(ValueError, match=rf"volume {vid} of .*store.zarr: the index read .* "
                       "census from ingest"):
        build_index(VolumeStore.open(store.location), 16, 8, progress=False)


def test_tools_name_a_damaged_chunk_in_one_line(store, tmp_path, capsys):
    vid = store.ids()[0]
    corrupt(chunk_file(store, vid, "label"))
    for tool, argv in ((index, [store.location, "--patch-size", "16", "--quiet"]),
                       (derive, [store.location, "--quiet"]),
                       (evaluate, [store.location, store.location])):
        assert tool.main(argv) == 2, tool.__name__
        line = one_error_line(capsys)
        assert f"volume '{vid}', array 'label', chunk c/0/1/0" in line, tool.__name__


def test_loader_workers_name_a_damaged_chunk(store, tmp_path, capsys):
    idx = build_index(store, 16, 8, progress=False)
    for vid in store.ids():
        for key in ("c/0/0/0", "c/0/0/1", "c/0/1/0", "c/0/1/1", "c/1/0/0", "c/1/0/1",
                    "c/1/1/0", "c/1/1/1"):
            corrupt(chunk_file(store, vid, "image", key))
    loader = make_loader(store, idx, "uniform", 16, batch_size=1, num_workers=1,
                         samples_per_epoch=2)
    with pytest.raises(Exception) as caught:  # noqa: B017 - torch re-raises its own way
        next(iter(loader))
    assert "array 'image', chunk c/" in message(caught.value)
    assert "Traceback" not in message(caught.value)
    # the trainer says the same in one line
    cfg = tiny_cfg(store.location, tmp_path / "run", num_workers=1)
    assert train_main(["--config", str(_write_cfg(cfg, tmp_path))]) == 2
    assert "array 'image', chunk c/" in one_error_line(capsys)


def _write_cfg(cfg, tmp_path: Path) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(config_to_yaml(cfg))
    return path


# ---------------------------------------------------------------------------- zips and TIFs
def _labels_dir(store: VolumeStore, tmp_path: Path) -> Path:
    import tifffile

    out = tmp_path / "labels"
    out.mkdir()
    for vid in store.ids():
        tifffile.imwrite(out / f"{vid}.tif", np.asarray(store.label(vid)) == 1)
    return out


def test_corrupt_zip_is_named(store, tmp_path, capsys):
    bad = tmp_path / "sub.zip"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    assert evaluate.main([str(bad), store.location]) == 2
    assert "sub.zip: not a readable zip file" in one_error_line(capsys)


def test_truncated_tif_inside_zip_is_named(store, tmp_path, capsys):
    preds = _labels_dir(store, tmp_path)
    sub = tmp_path / "sub.zip"
    with zipfile.ZipFile(sub, "w") as z:
        for p in sorted(preds.glob("*.tif")):
            data = p.read_bytes()
            z.writestr(p.name, data[: len(data) // 3] if p.stem == store.ids()[1] else data)
    assert evaluate.main([str(sub), store.location]) == 2
    line = one_error_line(capsys)
    assert f"sub.zip:{store.ids()[1]}.tif: unreadable TIFF" in line


def test_zip_member_with_bad_crc_is_named(store, tmp_path, capsys):
    preds = _labels_dir(store, tmp_path)
    sub = tmp_path / "sub.zip"
    with zipfile.ZipFile(sub, "w", zipfile.ZIP_STORED) as z:
        for p in sorted(preds.glob("*.tif")):
            z.write(p, p.name)
    raw = bytearray(sub.read_bytes())
    first = raw.index(b"II*\0")  # the first stored TIF's header
    raw[first + 200] ^= 0xFF
    sub.write_bytes(bytes(raw))
    assert evaluate.main([str(sub), store.location]) == 2
    assert "unreadable zip member (BadZipFile: Bad CRC-32" in one_error_line(capsys)


def test_zip_without_tifs_and_missing_paths(tmp_path, store, capsys):
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("readme.txt", "nothing")
    assert evaluate.main([str(empty), store.location]) == 2
    assert "no .tif files in the zip" in one_error_line(capsys)
    assert evaluate.main([str(tmp_path / "nope"), store.location]) == 2
    assert "no such folder, .zip or VolumeStore" in one_error_line(capsys)


def test_truncated_tif_in_a_folder_is_named(store, tmp_path, capsys):
    preds = _labels_dir(store, tmp_path)
    victim = preds / f"{store.ids()[2]}.tif"
    victim.write_bytes(victim.read_bytes()[:300])
    assert evaluate.main([str(preds), store.location]) == 2
    assert f"{victim}: unreadable TIFF" in one_error_line(capsys)
    with pytest.raises(ValueError, match="unreadable TIFF"):
        read_tif(victim)


# ---------------------------------------------------------------------------- checkpoints
def test_predict_refuses_what_is_not_a_checkpoint(store, tmp_path, capsys):
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"\x80\x04 not a pickle at all")
    assert predict.main([str(junk), store.location, str(tmp_path / "out")]) == 2
    line = one_error_line(capsys)
    assert "model.pt: not a readable checkpoint" in line and "written by the trainer" in line
    torch.save({"weights": 1}, tmp_path / "other.pt")
    assert predict.main([str(tmp_path / "other.pt"), store.location, str(tmp_path / "o")]) == 2
    assert "not a trainer checkpoint (no model, config)" in one_error_line(capsys)
    assert predict.main([str(tmp_path), store.location, str(tmp_path / "o")]) == 2
    assert "a run folder that finished at least one epoch" in one_error_line(capsys)
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_predict_names_a_damaged_input_chunk(store, tmp_path, capsys):
    cfg = tiny_cfg(store.location, tmp_path / "run")
    model = build_model(cfg.model, cfg.initial_filters, cfg.depth, cfg.deep_supervision)
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "config": asdict(cfg),
                                        "epoch": 0})
    vid = store.ids()[0]
    corrupt(chunk_file(store, vid, "image"))
    assert predict.main([str(tmp_path / "m.pt"), store.location, str(tmp_path / "o"),
                         "--overlap", "0"]) == 2
    assert f"volume '{vid}', array 'image', chunk c/0/1/0" in one_error_line(capsys)


# ---------------------------------------------------------------------------- run folders
@pytest.fixture(scope="module")
def trained(tmp_path_factory, layout):
    """A store and a finished 2-epoch run in it."""
    root = tmp_path_factory.mktemp("run")
    s = VolumeStore.create(root / "store.zarr", chunks=(16, 16, 16))
    ingest_competition(layout, s, progress=False)
    run = root / "run"
    assert train(tiny_cfg(s.location, run), log=quiet) == 0
    return s.location, run


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_fresh_run_refuses_a_folder_that_holds_a_run(trained, tmp_path, capsys):
    store_path, run = trained
    before = _snapshot(run)
    cfg = tiny_cfg(store_path, run, epochs=1)
    assert train_main(["--config", str(_write_cfg(cfg, tmp_path))]) == 2
    line = one_error_line(capsys)
    assert "holds a run (last.pt, best.pt)" in line and f"--resume {run}" in line
    assert _snapshot(run) == before


def test_overwrite_replaces_the_whole_run(trained, tmp_path):
    store_path, run = trained
    copy = tmp_path / "run"
    import shutil

    shutil.copytree(run, copy)
    (copy / "notes_from_the_old_run.txt").write_text("old")
    cfg = tiny_cfg(store_path, copy, epochs=1)
    assert train_main(["--config", str(_write_cfg(cfg, tmp_path)), "--overwrite"]) == 0
    assert not (copy / "notes_from_the_old_run.txt").exists()
    assert [r["epoch"] for r in read_metrics(copy)] == [0]
    assert load_checkpoint(copy)["epoch"] == 0


def test_resume_and_overwrite_together_is_an_error(trained, capsys):
    _, run = trained
    assert train_main(["--resume", str(run), "--overwrite"]) == 2
    assert "pass one" in one_error_line(capsys)


def test_failed_start_leaves_no_run_folder(tmp_path, capsys):
    cfg = tiny_cfg(tmp_path / "no_store.zarr", tmp_path / "run")
    assert train_main(["--config", str(_write_cfg(cfg, tmp_path))]) == 2
    assert "no store at" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_resume_drops_epochs_after_the_checkpoint_and_torn_lines(trained, tmp_path):
    store_path, run = trained
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ck = load_checkpoint(copy)
    ck["epoch"], ck["iteration"] = 0, 2  # as if killed after epoch 1's log line was written
    save_checkpoint(copy / "last.pt", ck)
    with open(copy / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')  # torn by the kill
    assert train_main(["--resume", str(copy)]) == 0
    assert [r["epoch"] for r in read_metrics(copy)] == [0, 1]


@pytest.mark.parametrize("part", ["optimizer", "strategy", "rng", "health_losses"])
def test_resume_from_a_checkpoint_with_a_torn_part_is_one_line(trained, tmp_path, capsys, part):
    import shutil

    _, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ck = torch.load(copy / "last.pt", weights_only=True)
    ck[part] = 7  # what a damaged or foreign file may hold there
    save_checkpoint(copy / "last.pt", ck)
    assert train_main(["--resume", str(copy)]) == 2
    assert f"{copy}: cannot resume from it" in one_error_line(capsys)


def test_resuming_a_finished_run_trains_nothing(trained, tmp_path):
    _, run = trained
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = (copy / "last.pt").read_bytes()
    logs: list[str] = []
    cfg = config_from_dict(load_checkpoint(copy)["config"])
    assert train(cfg, resume=str(copy), log=logs.append) == 0
    assert any("nothing left to train" in s for s in logs)
    assert (copy / "last.pt").read_bytes() == before
    assert [r["epoch"] for r in read_metrics(copy)] == [0, 1]


# ---------------------------------------------------------------------------- CLI input
def test_bad_numbers_are_usage_errors(tmp_path, capsys):
    for argv in (["--shape", "-5"], ["--volumes", "0"], ["--shape", "x"]):
        with pytest.raises(SystemExit) as e:
            synth.main([str(tmp_path / "s"), *argv])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "argument" in err
    assert not (tmp_path / "s").exists()


def test_failed_ingest_leaves_no_store(tmp_path, capsys):
    assert ingest.main([str(tmp_path / "missing"), str(tmp_path / "store.zarr")]) == 2
    assert "not a directory" in one_error_line(capsys)
    assert not (tmp_path / "store.zarr").exists()


def test_ingest_ids_repairs_one_damaged_volume(store, layout, capsys):
    vid = store.ids()[1]
    corrupt(chunk_file(store, vid, "label"))
    assert not store.verify().ok
    assert ingest.main([str(layout), store.location, "--overwrite", "--ids", vid]) == 0
    assert "ingested 1 volumes" in capsys.readouterr().out
    assert VolumeStore.open(store.location).verify(deep=True).ok
    assert ingest.main([str(layout), store.location, "--ids", "nope"]) == 2
    assert "no image/label pair for id(s) ['nope']" in one_error_line(capsys)


def test_patch_larger_than_every_volume_names_sizes(store, capsys):
    assert index.main([store.location, "--patch-size", "64", "--strict", "--quiet"]) == 2
    assert "smaller than the patch" in one_error_line(capsys)
    with pytest.warns(UserWarning):
        with pytest.raises(ValueError, match=r"patch \(64, 64, 64\): every volume is smaller "
                           r"\(.* \(32, 32, 32\)"):
            build_index(store, 64, progress=False)


def test_read_only_store_and_missing_volume(store):
    with pytest.raises(PermissionError, match="read-only"):
        store.add_volume("x", *make_volume((16, 16, 16), seed=0))
    with pytest.raises(PermissionError, match="read-only"):
        store.remove(store.ids()[0])
    with pytest.raises(KeyError, match="no complete volume 'nope'"):
        store.verify(["nope"])


def test_user_errors_decorator_keeps_tracebacks_for_bugs(capsys, monkeypatch):
    @user_errors
    def bad_input(argv=None) -> int:
        raise FileNotFoundError("x.tif: file not found")

    @user_errors
    def bug(argv=None) -> int:
        raise RuntimeError("a bug")

    assert bad_input() == 2
    assert one_error_line(capsys) == "error: x.tif: file not found"
    with pytest.raises(RuntimeError):
        bug()
    monkeypatch.setenv("VESUVIUS_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        bad_input()


def test_message_of_a_worker_error_is_its_last_line():
    err = ValueError("Caught ChunkError in DataLoader worker process 0.\nOriginal Traceback "
                     "(most recent call last):\n  File ...\n"
                     "vesuvius_data.store.integrity.ChunkError: "
                     "volume 'v', array 'label', chunk c/0/0/0: missing")
    assert message(err) == "volume 'v', array 'label', chunk c/0/0/0: missing"
    assert message(KeyError("no volume 'x'")) == "no volume 'x'"


# ---------------------------------------------------------------------------- kill -9
def _run_and_kill(argv: list[str], ready, timeout: float = 120.0) -> None:
    """Start a tool in a fresh interpreter, SIGKILL it once ``ready()`` holds (or it exits)."""
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def _manifest_count(store_path: Path) -> int:
    try:
        meta = json.loads((store_path / "zarr.json").read_text())
        return len(meta["attributes"]["vesuvius_data"]["volumes"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_kill_during_ingest_then_rerun_is_complete_and_identical(tmp_path):
    src = tmp_path / "src"
    write_competition_layout(src, 6, (48, 48, 48), seed=9, progress=False)
    dst = tmp_path / "store.zarr"
    _run_and_kill(["tools/ingest.py", str(src), str(dst), "--workers", "1", "--quiet"],
                  lambda: _manifest_count(dst) >= 1)
    assert _manifest_count(dst) < 6, "the kill came after the ingest finished"
    assert ingest.main([str(src), str(dst), "--quiet"]) == 0
    s = VolumeStore.open(dst)
    assert len(s) == 6 and s.verify(deep=True).ok
    for vid in s.ids():
        assert np.array_equal(np.asarray(s.image(vid)),
                              read_tif(src / "train_images" / f"{vid}.tif"))
        assert np.array_equal(np.asarray(s.label(vid)),
                              read_tif(src / "train_labels" / f"{vid}.tif"))


@pytest.mark.slow
def test_kill_during_index_leaves_old_index_or_none(store, tmp_path):
    out = tmp_path / "idx.npz"
    for delay in (1.0, 2.5):
        start = time.monotonic()
        _run_and_kill(["tools/index.py", store.location, "--patch-size", "16", "--out",
                       str(out), "--quiet"],
                      lambda d=delay, t=start: time.monotonic() - t > d)
        if out.exists():
            PatchIndex.load(out)  # whatever is there is a whole index
    assert index.main([store.location, "--patch-size", "16", "--out", str(out), "--quiet",
                       "--rebuild"]) == 0
    fresh = build_index(store, 16, 8, progress=False)
    loaded = PatchIndex.load(out)
    for k, v in fresh.columns.items():
        assert np.array_equal(loaded.columns[k], v)


@pytest.mark.slow
def test_kill_during_training_then_resume_finishes_without_mixing(trained, tmp_path,
                                                                  capsys):
    store_path, _ = trained
    run = tmp_path / "run"
    cfg = tiny_cfg(store_path, run, epochs=30, iterations_per_epoch=2)
    path = _write_cfg(cfg, tmp_path)
    _run_and_kill(["-m", "trainer", "--config", str(path)],
                  lambda: (run / "last.pt").is_file())
    done = load_checkpoint(run)["epoch"]
    assert done < 29, "the kill came after training finished"
    assert train_main(["--config", str(path)]) == 2  # a fresh start would clobber it
    assert "holds a run" in one_error_line(capsys)
    assert train_main(["--resume", str(run), "--epochs=4"]) == 0
    epochs = [r["epoch"] for r in read_metrics(run)]
    assert epochs == list(range(len(epochs))) and epochs[-1] == max(3, done)
