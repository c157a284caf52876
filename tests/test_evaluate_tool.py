"""tools/evaluate.py: per-volume table, JSON, zip input, workers, and clear errors."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import tifffile

from trainer.commands import tune as tune_postprocess
from vesuvius_data.commands import evaluate
from vesuvius_data.repair import tune as tune_search


def _sheets(*zs, shape=(32, 32, 32)):
    v = np.zeros(shape, np.uint8)
    for z in zs:
        v[z] = 1
    return v


@pytest.fixture
def folders(tmp_path):
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    labels.mkdir()
    preds.mkdir()
    tifffile.imwrite(labels / "a.tif", _sheets(5))
    tifffile.imwrite(labels / "b.tif", _sheets(5, 9))
    tifffile.imwrite(preds / "a.tif", _sheets(5))                      # perfect: 1.0
    tifffile.imwrite(preds / "b.tif", np.zeros((32, 32, 32), np.uint8))  # empty: 0.35 / 1.3
    return preds, labels


def test_table_and_json(folders, capsys):
    preds, labels = folders
    assert evaluate.main([str(preds), str(labels)]) == 0
    out = capsys.readouterr().out
    assert "mean" in out and "1.0000" in out and "0.2692" in out
    assert evaluate.main([str(preds), str(labels), "--json", "--workers", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["volumes"]["a"]["score"] == pytest.approx(1.0)
    assert data["volumes"]["b"]["score"] == pytest.approx(0.35 / 1.3)
    assert data["mean_score"] == pytest.approx((1.0 + 0.35 / 1.3) / 2)
    assert data["volumes"]["b"]["betti"]["gt"] == [4, 0, 0]


def test_submission_zip_scores_like_the_folder(folders, tmp_path, capsys):
    preds, labels = folders
    sub = tmp_path / "submission.zip"
    with zipfile.ZipFile(sub, "w") as z:
        for p in preds.glob("*.tif"):
            z.write(p, p.name)
    assert evaluate.main([str(sub), str(labels), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mean_score"] == pytest.approx(
        (1.0 + 0.35 / 1.3) / 2)


def test_labels_from_a_store(folders, tmp_path, capsys):
    from vesuvius_data import VolumeStore

    preds, labels = folders
    store = VolumeStore.create(tmp_path / "s.zarr", chunks=(16, 16, 16))
    for vid in ("a", "b"):
        label = tifffile.imread(labels / f"{vid}.tif")
        store.add_volume(vid, np.zeros(label.shape, np.uint8), label)
    assert evaluate.main([str(preds), str(tmp_path / "s.zarr"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["volumes"]["a"]["score"] == pytest.approx(1.0)


def test_a_store_spacing_sets_the_unit_of_tau(tmp_path, capsys):
    """A sheet predicted one voxel off in z is within tau = 2 voxels; when the store says a
    voxel is 4 mm deep, only the face the two sheets share (one of each one's two) is."""
    from vesuvius_data import VolumeStore

    preds = tmp_path / "preds"
    preds.mkdir()
    tifffile.imwrite(preds / "a.tif", _sheets(6))
    sdice = {}
    for spacing in (None, (4.0, 1.0, 1.0)):
        path = tmp_path / f"s{spacing is not None}.zarr"
        store = VolumeStore.create(path, chunks=(16, 16, 16))
        store.add_volume("a", np.zeros((32, 32, 32), np.uint8), _sheets(5), spacing=spacing)
        assert evaluate.main([str(preds), str(path), "--json"]) == 0
        sdice[spacing] = json.loads(capsys.readouterr().out)["volumes"]["a"]["surface_dice"]
    assert sdice[None] == pytest.approx(1.0) and sdice[(4.0, 1.0, 1.0)] == pytest.approx(0.5)


def test_errors_name_the_problem(folders, capsys):
    preds, labels = folders
    (preds / "b.tif").unlink()
    assert evaluate.main([str(preds), str(labels)]) == 2
    assert "no prediction for 1 label id(s): ['b']" in capsys.readouterr().err
    tifffile.imwrite(preds / "b.tif", np.zeros((16, 32, 32), np.uint8))
    assert evaluate.main([str(preds), str(labels)]) == 2
    assert "differ in shape" in capsys.readouterr().err
    tifffile.imwrite(preds / "b.tif", np.zeros((32, 32, 32), np.uint8))
    tifffile.imwrite(labels / "b.tif", _sheets(5) * 3)
    assert evaluate.main([str(preds), str(labels)]) == 2
    assert "label values [3] outside 0/1/2" in capsys.readouterr().err
    assert evaluate.main([str(preds / "nope"), str(labels)]) == 2


def test_tune_postprocess_picks_the_threshold_by_the_metric(tmp_path, capsys):
    labels, probs = tmp_path / "labels", tmp_path / "probs"
    labels.mkdir()
    probs.mkdir()
    rng = np.random.default_rng(0)
    for vid in ("a", "b"):
        label = _sheets(5, 20)
        label[25:] = 2
        specks = rng.random(label.shape) < 0.02
        specks[3:8] = specks[18:23] = False  # away from the sheets
        prob = np.where(label == 1, 0.8, 0.0) + specks * 0.55
        tifffile.imwrite(labels / f"{vid}.tif", label)
        tifffile.imwrite(probs / f"{vid}.tif", np.clip(prob, 0, 1).astype(np.float16))
    # specks at p = 0.55 wreck the topology at threshold 0.5; 0.6 keeps only the sheets
    only_threshold = ["--sheet-sigmas", "0", "--weak-thresholds", "none", "--min-components", "0",
                      "--plug", "off", "--patch-areas", "0", "--max-cavities", "0"]
    assert tune_postprocess.main([str(probs), str(labels), "--thresholds", "0.5,0.6",
                                  *only_threshold]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("best over 2 volume(s): --threshold 0.6")
    assert tune_postprocess.main([str(probs), str(labels), "--thresholds", "0.5",
                                  "--sheet-sigmas", "0", "--weak-thresholds", "none",
                                  "--min-components", "0,10",
                                  "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["min_component"] == 10 and rows[0]["score"] == pytest.approx(1.0)
    assert rows[0]["score"] > rows[-1]["score"]
    assert rows[0]["flags"].startswith("--threshold 0.5 --min-component 10")
    # a negative size is a clear error before any scoring
    assert tune_postprocess.main([str(probs), str(labels), "--thresholds", "0.5",
                                  "--weak-thresholds", "0.7", "--min-components", "-1"]) == 2
    assert "must be >= 0" in capsys.readouterr().err


def test_table_says_when_dim1_matches_are_only_a_bound(tmp_path, capsys, monkeypatch):
    from vesuvius_data.metrics import _dim1

    g = np.zeros((10, 16, 16), np.uint8)
    g[1, 1:7, 1:7] = g[3, 1:7, 1:7] = 1  # two sheets inside the first octant
    g[1, 4, 2:4] = 0  # a hole
    p = g.copy()
    p[1, 4, 2:4] = 1
    p[1:4, 2, 2] = p[1:4, 2, 5] = 1  # a handle
    for folder, volume in (("labels", g), ("preds", p)):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "h.tif", volume)
    args = [str(tmp_path / "preds"), str(tmp_path / "labels")]
    assert evaluate.main(args) == 0
    assert "upper bound" not in capsys.readouterr().out
    monkeypatch.setattr(_dim1, "MAX_SWEEP_BYTES", 0)
    assert evaluate.main(args) == 0
    assert "their dim-1 matches are an upper bound: ['h']" in capsys.readouterr().out


def test_tune_breaks_ties_by_candidate_order_and_keeps_cavity_filling_by_default():
    """A sheet encloses no cavity: where filling changes nothing on the tuning volumes it
    stays on (the default lists it first), so a test volume with one stray cavity is not
    charged a whole TopoScore dimension."""
    label = _sheets(5, 20)
    prob = np.where(label == 1, 0.9, 0.0).astype(np.float32)
    first = [{"threshold": 0.5}]
    on_first = tune_search.tune({"a": prob}, {"a": label},
                                     [first, [{"max_cavity": 100}, {"max_cavity": 0}]])
    off_first = tune_search.tune({"a": prob}, {"a": label},
                                      [first, [{"max_cavity": 0}, {"max_cavity": 100}]])
    assert on_first[0]["score"] == off_first[0]["score"] == pytest.approx(1.0)
    assert tune_search.config_of(on_first[0]).max_cavity == 100
    assert tune_search.config_of(off_first[0]).max_cavity == 0
    assert tune_search.search_stages()[-1][0] == {"max_cavity": 100}


def test_tune_counts_scores_within_tie_as_equal(monkeypatch):
    """Scores 1e-4 apart are a tie (the first listed wins); 2e-3 apart are not."""
    from types import SimpleNamespace

    monkeypatch.setattr(tune_search, "repair", lambda prob, cfg: cfg.max_cavity)
    monkeypatch.setattr(tune_search, "score_volume", lambda cavity, label: SimpleNamespace(
        score=1.0 - 1e-6 * cavity, topo_score=0.0, surface_dice=0.0, voi_score=0.0))

    def chosen(sizes):
        rows = tune_search.tune({"a": None}, {"a": None},
                                     [[{"max_cavity": n} for n in sizes]])
        return tune_search.config_of(rows[0]).max_cavity

    assert chosen([100, 0]) == 100  # 1e-4 below the best: a tie, listed first
    assert chosen([2000, 0]) == 0  # 2e-3 below: a real loss


def test_tune_searches_smoothing_with_the_threshold_and_smooths_each_volume_once(monkeypatch):
    """Noisy probabilities of two tilted sheets: smoothing along them wins, and each volume is
    smoothed once per sigma however many thresholds and later steps are tried on it."""
    rng = np.random.default_rng(0)
    label = np.zeros((32, 40, 40), np.uint8)
    for y in range(40):
        lo = 8 + int(round(0.3 * y)) // 2
        label[lo:lo + 2, y] = label[lo + 5:lo + 7, y] = 1
    prob = np.clip(np.where(label == 1, 0.75, 0.2) + rng.normal(0, 0.2, label.shape), 0, 1)
    calls = []
    smooth = tune_search.smooth_along_sheets
    monkeypatch.setattr(tune_search, "smooth_along_sheets",
                        lambda p, s: calls.append(s) or smooth(p, s))
    stages = [[{"sheet_sigma": s, "threshold": t} for s in (0.0, 1.5) for t in (0.4, 0.5, 0.6)],
              [{"min_component": m} for m in (0, 10)]]
    rows = tune_search.tune({"a": prob, "b": prob[::-1].copy()},
                                 {"a": label, "b": label[::-1].copy()}, stages)
    assert tune_search.config_of(rows[0]).sheet_sigma == 1.5
    assert rows[0]["score"] > max(r["score"] for r in rows if r["sheet_sigma"] == 0) + 0.1
    assert sorted(calls) == [1.5, 1.5]  # one smoothing per volume, for 6 configs using it


def test_the_intensity_baseline_picks_the_best_grid_point():
    """The tuner smooths once per sigma and takes all percentiles in one pass; it must choose
    what scoring every grid point one by one chooses."""
    from vesuvius_data.baselines import intensity_threshold, tune_intensity_threshold
    from vesuvius_data.metrics import score_volume
    from vesuvius_data.synthetic import make_volume

    image, label = make_volume((40, 40, 40), 3, preset="hard")
    grid = {"sigmas": (0.0, 1.0), "percentiles": (75, 85, 91), "dusts": (0, 50)}
    best = tune_intensity_threshold({"a": image}, {"a": label}, **grid)
    brute = max(((score_volume(intensity_threshold(image, s, p, d), label).score, -i, s, p, d)
                 for i, (s, p, d) in enumerate((s, p, d) for s in grid["sigmas"]
                                               for p in grid["percentiles"]
                                               for d in grid["dusts"])))
    assert (best["sigma"], best["percentile"], best["dust"]) == brute[2:]
    assert best["score"] == pytest.approx(brute[0])
