"""The trainer in-process on tiny configs: smoke, learning, resume, config, health, report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from trainer.checkpoint import load_checkpoint
from trainer.cli import main
from trainer.commands import report
from trainer.config import (
    Config,
    apply_overrides,
    check_names,
    config_from_dict,
    config_to_yaml,
    load_config,
)
from trainer.folds import split_folds
from trainer.health import Confusion, HealthMonitor
from trainer.schedule import learning_rate
from trainer.train import COLLAPSE_EXIT, train
from trainer.verdict import read_metrics, verdict
from vesuvius_data import VolumeStore
from vesuvius_data.synthetic import make_volume

ROOT = Path(__file__).resolve().parents[1]
FAST_LOSS = {"dice_weight": 0.4, "focal_weight": 0.6, "boundary_weight": 0.0,
             "cldice_weight": 0.0, "connectivity_weight": 0.0}


@pytest.fixture(scope="module")
def four_scrolls(tmp_path_factory):
    """Four 48^3 volumes of four scrolls."""
    path = tmp_path_factory.mktemp("trainer") / "store.zarr"
    store = VolumeStore.create(path, chunks=(16, 16, 16))
    for i in range(4):
        store.add_volume(f"v{i}", *make_volume((48, 48, 48), seed=30 + i), scroll_id=f"s{i}")
    return path


def tiny(store_path, out, **kw) -> Config:
    cfg = config_from_dict({
        "data_dir": str(store_path), "out": str(out), "patch_size": 16, "stride": 8,
        "num_folds": 2, "num_workers": 0, "initial_filters": 4, "depth": 2, "epochs": 2,
        "iterations_per_epoch": 3, "val_iterations": 2, "warmup_epochs": 1, "augment": 0.0,
        "postprocess_search": "quick", "loss_weights": FAST_LOSS})
    return config_from_dict(kw, cfg)


def test_smoke_run_writes_metrics_checkpoints_and_index(four_scrolls, tmp_path, capsys):
    cfg = tiny(four_scrolls, tmp_path / "run", loss_weights={"boundary_weight": 0.1,
                                                              "connectivity_weight": 0.1},
               deep_supervision=True, ema_decay=0.9, model="resunet")
    assert train(cfg) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "built the patch index" in out and "deriving sdt, skeleton" in out
    assert "it/s" not in captured.err and "vol/s" not in captured.err  # no bars in logs
    assert "Epoch 1 | Train Loss:" in out and "pred_fg" in out and "verdict:" in out
    recs = read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in recs] == [0, 1]
    assert set(recs[0]["terms"]) == {"dice", "focal", "boundary", "connectivity"}
    ck = load_checkpoint(tmp_path / "run")
    assert ck["epoch"] == 1 and ck["config"]["model"] == "resunet" and ck["ema"] is not None
    assert (tmp_path / "run" / "best.pt").is_file()
    assert not list((tmp_path / "run").glob("*.partial"))


def test_competition_metric_picks_the_best_checkpoint(four_scrolls, tmp_path, capsys):
    cfg = tiny(four_scrolls, tmp_path / "metric", metric_every=2, epochs=4)
    assert train(cfg) == 0
    out = capsys.readouterr().out
    assert "on 2 volume(s) (whole) every 2 epochs; an empty prediction scores" in out
    assert "| score " in out and "(competition: topo" in out
    recs = read_metrics(tmp_path / "metric")
    assert recs[0]["competition"] is None and recs[0]["score"] is None  # not a metric epoch
    comp = recs[1]["competition"]
    assert set(comp) == {"score", "raw_score", "topo_score", "surface_dice", "voi_score",
                         "degenerate"}
    assert 0.0 <= comp["score"] <= comp["raw_score"] <= 1.0
    # one score everywhere: the record, best.pt and the verdict
    assert recs[1]["score"] == comp["score"] and recs[1]["score_name"] == "competition"
    # epochs 1 and 3 are scored; best.pt is the better of the two (the first on a tie)
    assert [r["score"] is not None for r in recs] == [False, True, False, True]
    winner = 3 if recs[3]["score"] > recs[1]["score"] else 1
    best = load_checkpoint(tmp_path / "metric" / "best.pt")
    assert best["epoch"] == best["best_epoch"] == winner
    assert best["best_score"] == recs[winner]["score"]
    assert load_checkpoint(tmp_path / "metric")["best_epoch"] == winner
    v = verdict(recs)["criteria"]["best_score"]
    assert v["value"] == recs[winner]["score"] and v["epoch"] == winner
    assert v["passed"] == (recs[winner]["score"] > recs[winner]["baseline"])


def test_an_empty_prediction_cannot_win_validation():
    """No octant holds more than one sheet: predicting nothing gets TopoScore 1.0 and ~0.65 overall,
    more than a real but imperfect model. The guard scores it 0 for selection."""
    from trainer.validation import guarded_score
    from vesuvius_data import LabelSpec

    label = np.zeros((32, 32, 32), np.uint8)
    label[7:9] = 1  # one sheet: at most one component in any octant
    empty, bad = guarded_score(np.zeros(label.shape, bool), label, LabelSpec())
    assert bad and empty.topo_score == 1.0 and empty.score == pytest.approx(0.65, abs=0.01)
    sloppy = label == 1
    sloppy[8, ::3, ::3] = False  # pinholes
    sloppy[2:5, ::4, ::4] = sloppy[12:15, 2::4, 2::4] = True  # and specks off the sheet
    real, bad = guarded_score(sloppy, label, LabelSpec())
    assert not bad and real.score < empty.score  # the quirk the guard exists for


def test_verdict_best_score_must_beat_the_empty_prediction():
    base = {"train_loss": 1.0, "val_loss": 1.0, "val": {"balanced_accuracy": 0.9},
            "alarms": [], "score_name": "competition", "baseline": 0.65}
    recs = [base | {"epoch": 0, "score": None}, base | {"epoch": 1, "score": 0.60},
            base | {"epoch": 2, "score": None}, base | {"epoch": 3, "score": 0.64}]
    c = verdict(recs)["criteria"]["best_score"]
    assert c["value"] == 0.64 and c["epoch"] == 3 and not c["passed"]
    assert "0.6500" in c["target"]
    recs[1]["score"] = 0.8
    c = verdict(recs)["criteria"]["best_score"]
    assert c["passed"] and c["epoch"] == 1


@pytest.mark.slow
def test_tiny_model_learns_the_sheets(four_scrolls, tmp_path):
    cfg = tiny(four_scrolls, tmp_path / "learn", patch_size=32, stride=16, initial_filters=8,
               depth=3, epochs=5, iterations_per_epoch=40, val_iterations=4,
               learning_rate=3e-3, num_folds=4)
    assert train(cfg, log=lambda s: None) == 0
    recs = read_metrics(tmp_path / "learn")
    first, last = recs[0], recs[-1]
    assert last["train_loss"] < 0.5 * first["train_loss"]
    assert abs(last["train"]["pred_fg"] - last["train"]["label_fg"]) < 0.35 * \
        last["train"]["label_fg"]
    assert last["train"]["balanced_accuracy"] > 0.8
    assert last["val"]["balanced_accuracy"] > 0.6  # 8 patches of one unseen scroll
    assert not any(r["alarms"] for r in recs)  # a healthy run stays quiet


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_resume_equals_uninterrupted(four_scrolls, tmp_path, workers):
    kw = {"epochs": 4, "sampler": "hard-negative", "augment": 0.5, "iterations_per_epoch": 2,
          "num_workers": workers}
    assert train(tiny(four_scrolls, tmp_path / "full", **kw), log=lambda s: None) == 0
    cfg = tiny(four_scrolls, tmp_path / "split", **kw)
    assert train(cfg, stop_after_epochs=2, log=lambda s: None) == 0
    assert load_checkpoint(tmp_path / "split")["epoch"] == 1
    assert main(["--resume", str(tmp_path / "split")]) == 0
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "split")
    assert b["epoch"] == 3 and b["iteration"] == a["iteration"]
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a["strategy"]["difficulty"], b["strategy"]["difficulty"])
    ra, rb = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "split")
    assert [r["train_loss"] for r in ra] == pytest.approx([r["train_loss"] for r in rb],
                                                          rel=1e-5)


def test_collapse_is_caught_and_can_stop_the_run(tmp_path, capsys):
    """Labels with 2 mapped to foreground: the '66 % foreground' mistake, made on purpose."""
    store = VolumeStore.create(tmp_path / "broken.zarr", chunks=(16, 16, 16))
    for i in range(2):
        image, label = make_volume((32, 32, 32), seed=40 + i)
        label[label == 2] = 1
        store.add_volume(f"b{i}", image, label, scroll_id=f"s{i}")
    cfg = tiny(tmp_path / "broken.zarr", tmp_path / "run", epochs=6, learning_rate=0.0,
               warmup_epochs=1, stop_on_collapse=True, use_class_weights=False)
    assert train(cfg) == COLLAPSE_EXIT
    out = capsys.readouterr().out
    assert "WARNING: surface is" in out and "ignore label being counted as foreground" in out
    assert "!!! " in out and "likely causes" in out and "stopping: training collapsed" in out
    assert len(read_metrics(tmp_path / "run")) < 6


def test_health_monitor_rules():
    m = HealthMonitor(warmup_epochs=1, persist=2)
    healthy = {"pred_fg": 0.13, "label_fg": 0.14, "balanced_accuracy": 0.9, "fg_recall": 0.9,
               "bg_recall": 0.9}
    collapsed = healthy | {"pred_fg": 0.9, "balanced_accuracy": 0.5}
    assert m.check(0, 1.0, collapsed) == []  # warmup: silent
    assert m.check(1, 0.8, collapsed) == []  # once may be a passing phase
    alarms = m.check(2, 0.6, collapsed)
    assert any("COLLAPSE" in a for a in alarms) and any("NOT SEPARATING" in a for a in alarms)
    assert m.check(3, 0.4, healthy) == []
    flat = HealthMonitor(warmup_epochs=0, flat_epochs=2)
    for e in range(2):
        assert flat.check(e, 0.4, healthy) == []
    assert any("FLAT LOSS" in a for a in flat.check(2, 0.4, healthy))


def test_confusion_counts_only_labeled_voxels():
    from trainer.losses import make_targets

    label = torch.tensor([1, 1, 0, 0, 2, 2], dtype=torch.uint8).reshape(1, 1, 1, 1, 6)
    logits = torch.tensor([5.0, -5, 5, -5, 5, 5]).reshape(1, 1, 1, 1, 6)
    c = Confusion()
    c.add(logits, make_targets(label))
    assert (c.tp, c.fn, c.fp, c.tn) == (1, 1, 1, 1)
    s = c.summary()
    assert s["pred_fg"] == 0.5 and s["label_fg"] == 0.5 and s["dice"] == 0.5


def test_config_round_trip_and_override_errors(tmp_path):
    cfg = apply_overrides(Config(), {"learning_rate": "3e-4", "loss_weights.dice_weight": "0.5",
                                     "sampler": "hard-negative", "focal_alpha": "0.25",
                                     "use_class_weights": "false", "epochs": "7"})
    assert cfg.learning_rate == 3e-4 and cfg.loss_weights.dice_weight == 0.5
    assert cfg.focal_alpha == 0.25 and cfg.use_class_weights is False
    (tmp_path / "c.yaml").write_text(config_to_yaml(cfg))
    assert load_config(tmp_path / "c.yaml") == cfg
    with pytest.raises(ValueError, match="unknown config key 'learning_rat'.*valid keys:"):
        apply_overrides(Config(), {"learning_rat": "1"})
    with pytest.raises(ValueError, match="wants"):
        apply_overrides(Config(), {"epochs": "many"})
    with pytest.raises(ValueError, match="unknown config key 'loss_weights.dice'"):
        apply_overrides(Config(), {"loss_weights.dice": "1"})
    from trainer.config import PACKAGED_CONFIGS, check_names

    names = sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))
    assert names == ["cpu_budget", "cpu_smoke", "default"]
    for name in names:
        shipped = yaml.safe_load((PACKAGED_CONFIGS / f"{name}.yaml").read_text())
        check_names(config_from_dict(shipped))  # every shipped key and name is valid
        # a packaged config by its name, or by the path older docs wrote
        assert load_config(name) == load_config(f"configs/{name}.yaml") == \
            config_from_dict(shipped)


def test_a_config_that_is_no_yaml_mapping_is_one_line_naming_it(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data_dir: [unclosed\n")
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: not valid YAML at line 2") and "Traceback" not in err
    bad.write_text("epochs: many\n")
    assert main(["--config", str(bad)]) == 2
    assert f"error: {bad}: config key 'epochs' wants" in capsys.readouterr().err


def test_cli_errors(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "none.yaml")]) == 2
    assert "no config file" in capsys.readouterr().err
    assert main(["--bogus=1"]) == 2
    assert "unknown config key 'bogus'" in capsys.readouterr().err


def test_schedule_warmup_then_cosine_and_poly():
    lrs = [learning_rate(i, 1.0, 10, 110) for i in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.5, abs=0.02) and lrs[-1] < 0.01
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert learning_rate(60, 1.0, 10, 110, "poly") == pytest.approx(0.5**0.9, rel=0.02)


def test_group_kfold_keeps_scrolls_apart(four_scrolls):
    store = VolumeStore.open(four_scrolls)
    seen = []
    for fold in range(2):
        train_ids, val_ids = split_folds(store, store.ids(), 2, fold)
        assert not set(train_ids) & set(val_ids) and len(val_ids) == 2
        seen += val_ids
    assert sorted(seen) == store.ids()
    with pytest.raises(ValueError, match="num_folds=5 but only 4 groups"):
        split_folds(store, store.ids(), 5, 0)
    # explicit validation volumes replace the folds
    assert split_folds(store, store.ids(), 2, 0, ["v2"]) == (["v0", "v1", "v3"], ["v2"])
    with pytest.raises(ValueError, match=r"val_volumes \['nope'\] are not in the store"):
        split_folds(store, store.ids(), 2, 0, ["nope"])
    cfg = apply_overrides(Config(), {"val_volumes": "[v1, v3]"})
    assert cfg.val_volumes == ["v1", "v3"]
    with pytest.raises(ValueError, match="val_volumes"):
        apply_overrides(Config(), {"val_volumes": "[1, 2]"})


def test_report_overlays_runs(four_scrolls, tmp_path, capsys):
    for name in ("a", "b"):
        train(tiny(four_scrolls, tmp_path / name, epochs=1), log=lambda s: None)
    assert report.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                        str(tmp_path / "r.png")]) == 0
    from matplotlib.image import imread

    img = imread(tmp_path / "r.png")
    assert img.ndim == 3 and min(img.shape[:2]) >= 300 and img[..., :3].std() > 0.05
    assert capsys.readouterr().out.count("verdict:") == 2


def test_fold_statistics_come_from_the_training_volumes_only(four_scrolls, tmp_path):
    """Class weights, focal alpha, the output-bias prior and balanced sampling's threshold are
    the training fold's: moving a volume into validation changes them."""
    store = VolumeStore.open(four_scrolls)
    seen = {}
    for val in ("v0", "v3"):
        said: list[str] = []
        cfg = tiny(four_scrolls, tmp_path / val, epochs=1, val_volumes=[val])
        assert train(cfg, log=said.append) == 0
        train_ids = [v for v in store.ids() if v != val]
        census = store.census(train_ids)
        w = census.class_weights()
        assert any(f"background {w['background']:.3f}, foreground {w['foreground']:.3f}" in s
                   for s in said)
        assert any(f"surface prior {census.foreground_share_of_labeled:.3f}" in s for s in said)
        seen[val] = w["foreground"]
    assert seen["v0"] != seen["v3"]


def test_index_subset_forgets_other_volumes(four_scrolls):
    store = VolumeStore.open(four_scrolls)
    from vesuvius_data import build_index

    index = build_index(store, 16, 8, progress=False)
    part = index.subset(np.isin(index.volume, [1, 3]))
    assert part.volume_ids == ["v1", "v3"] and set(np.unique(part.volume)) == {0, 1}
    assert part.census() == store.census(["v1", "v3"])
    assert part.volume_ids[part.volume[0]] == index.volume_ids[index.volume[
        np.flatnonzero(np.isin(index.volume, [1, 3]))[0]]]
    np.testing.assert_array_equal(part.corners, index.corners[np.isin(index.volume, [1, 3])])


def test_checkpoint_state_and_restore_are_a_matched_pair(four_scrolls, tmp_path):
    from trainer.checkpoint import RunState, checkpoint_state, restore
    from trainer.data import volume_rows as _volume_rows
    from trainer.train import _build_run
    from vesuvius_data import build_index
    from vesuvius_data.sampling import make_strategy

    cfg = tiny(four_scrolls, tmp_path / "run", sampler="hard-negative", ema_decay=0.9)
    assert train(cfg, log=lambda s: None) == 0
    saved = load_checkpoint(tmp_path / "run")
    store = VolumeStore.open(four_scrolls)
    index = build_index(store, 16, 8, progress=False)
    train_ids, _ = split_folds(store, index.volume_ids, cfg.num_folds, cfg.fold, [])
    index = index.subset(_volume_rows(index, train_ids))
    run: RunState = _build_run(cfg, index.census(), make_strategy("hard-negative", index), "",
                               torch.device("cpu"), lambda s: None)
    restore(run, saved)
    again = checkpoint_state(run, cfg)
    assert set(again) == set(saved) and again["val_ids"] == saved["val_ids"]

    def same(a, b) -> bool:
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        if isinstance(a, torch.Tensor):  # unseen rows' difficulty is NaN
            return a.dtype == b.dtype and np.array_equal(a.numpy(), b.numpy(),
                                                         equal_nan=a.is_floating_point())
        if isinstance(a, np.ndarray):
            return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        return a == b

    for key in saved:
        assert same(again[key], saved[key]), key


def test_config_names_are_checked_before_any_data_work(tmp_path, capsys):
    from trainer.config import check_names

    missing_store = str(tmp_path / "no_store.zarr")
    for override, message in (("--sampler=balanced-ish", "unknown sampler 'balanced-ish'"),
                              ("--model=vnet", "unknown model 'vnet'"),
                              ("--optimizer=adam", "unknown optimizer 'adam'; valid: adamw, sgd"),
                              ("--schedule=step", "unknown schedule 'step'"),
                              ("--sampler_options={fg_share: 0.5, nope: 1}",
                               "sampler_options ['nope'] are not options of the 'balanced'"),
                              ("--focal_alpha=high", "focal_alpha must be")):
        assert main([f"--data_dir={missing_store}", override]) == 2
        err = capsys.readouterr().err
        assert message in err and "no store" not in err, (override, err)
    check_names(Config())  # the defaults are valid


def test_help_explains_every_key(capsys):
    from dataclasses import fields

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for f in fields(Config):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"--{f.name}"))
        assert len(line.split("  ")) >= 2 and len(line.strip()) > len(f.name) + 12, line
    assert "--loss_weights.dice_weight=" in text and "--overwrite" in text


def test_patch_size_spelled_either_way(four_scrolls, tmp_path):
    from trainer.cli import parse_trainer_argv as _parse_argv

    assert _parse_argv(["--patch-size=32"])[3] == {"patch_size": "32"}
    assert _parse_argv(["--patch_size", "32"])[3] == {"patch_size": "32"}


def test_sgd_is_nesterov_from_the_registry():
    from trainer.optimizers import OPTIMIZERS, build_optimizer

    p = [torch.nn.Parameter(torch.zeros(2))]
    opt = build_optimizer("sgd", p, 0.1, 0.0)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]
    assert set(OPTIMIZERS) == {"adamw", "sgd"}


def test_normalising_on_the_device_trains_the_same_numbers(four_scrolls, tmp_path):
    """normalize_on: device (the default on CUDA) hands the trainer uint8 patches and
    normalises them after the move: with augmentation off, the same losses as the workers'
    float32 patches, to float rounding."""
    from trainer.data import normalize_on

    runs = {}
    for on in ("workers", "device"):
        cfg = tiny(four_scrolls, tmp_path / on, normalize_on=on, epochs=1)
        assert train(cfg, log=lambda s: None) == 0
        runs[on] = read_metrics(tmp_path / on)[0]
    for key in ("train_loss", "val_loss"):
        assert runs["device"][key] == pytest.approx(runs["workers"][key], rel=1e-5), key
    cfg = tiny(four_scrolls, tmp_path / "x")
    assert normalize_on(cfg, torch.device("cuda")) == "device"
    assert normalize_on(cfg, torch.device("cpu")) == "workers"
    with pytest.raises(ValueError, match="normalize_on must be auto, workers or device"):
        check_names(config_from_dict({"normalize_on": "gpu"}, cfg))
