import numpy as np
import pytest
import tifffile

from vesuvius_data import LabelSpec, count_labels
from vesuvius_data.synthetic import make_volume, write_competition_layout


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape", [(64, 64, 64), (40, 56, 64)])
def test_census_matches_real_data_ranges(shape, seed):
    _, label = make_volume(shape, seed)
    f = count_labels(label, LabelSpec()).fractions()
    assert 0.25 <= f["background"] <= 0.39
    assert 0.04 <= f["foreground"] <= 0.09
    assert 0.52 <= f["ignore"] <= 0.71


def test_deterministic_from_seed_and_seeds_differ():
    a = make_volume((32, 32, 32), seed=7)
    b = make_volume((32, 32, 32), seed=7)
    c = make_volume((32, 32, 32), seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_ct_like_intensity_and_thin_sheets():
    image, label = make_volume((64, 64, 64), seed=2)
    assert image.dtype == np.uint8 and label.dtype == np.uint8
    # papyrus is brighter than the gaps between sheets, but noisy enough to overlap
    fg, bg = image[label == 1].astype(float), image[label == 0].astype(float)
    assert fg.mean() > bg.mean() + 30
    assert np.percentile(fg, 5) <= np.percentile(bg, 95)
    # sheets are thin: along every axis, most runs of surface voxels are short in at least one
    runs = []
    for axis in range(3):
        m = np.moveaxis(label == 1, axis, 0).astype(np.int8)
        starts = (np.diff(m, axis=0) == 1).sum()
        runs.append((label == 1).sum() / max(starts, 1))
    assert min(runs) <= 4.5


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match="3-D"):
        make_volume((64, 64))  # type: ignore[arg-type]


def test_competition_layout_is_lzw_tiffs(tmp_path):
    ids = write_competition_layout(tmp_path, n_volumes=3, shape=(16, 20, 24), seed=1)
    assert len(set(ids)) == 3
    rows = (tmp_path / "train.csv").read_text().splitlines()
    assert rows[0] == "id,scroll_id" and len(rows) == 4
    for vid in ids:
        with tifffile.TiffFile(tmp_path / "train_images" / f"{vid}.tif") as tif:
            assert tif.pages[0].compression == tifffile.COMPRESSION.LZW
            assert tif.asarray().shape == (16, 20, 24)
        lab = tifffile.imread(tmp_path / "train_labels" / f"{vid}.tif")
        assert set(np.unique(lab)) <= {0, 1, 2}
    assert not list(tmp_path.rglob("*.partial"))


@pytest.mark.parametrize("seed", range(4))
def test_hard_preset_keeps_the_census_and_is_harder(seed):
    """Thin sheets packed closer, lower contrast, debris off the sheets; the census stays near
    the real one (more surface: every sheet of the annotated region is labelled)."""
    image, label = make_volume((64, 64, 64), seed, preset="hard")
    f = count_labels(label, LabelSpec()).fractions()
    assert 0.25 <= f["background"] <= 0.39 and 0.04 <= f["foreground"] <= 0.12
    assert 0.5 <= f["ignore"] <= 0.71
    easy_image, easy_label = make_volume((64, 64, 64), seed)
    contrast = lambda im, lab: im[lab == 1].mean() - im[lab == 0].mean()  # noqa: E731
    assert 5 < contrast(image, label) < 0.7 * contrast(easy_image, easy_label)


def test_hard_preset_sheets_are_thinner_and_closer():
    def run_lengths(label, axis_values):
        m = label == 1
        return [m.sum() / max(int((np.diff(np.moveaxis(m, a, 0).astype(np.int8), axis=0) == 1)
                                  .sum()), 1) for a in axis_values]
    hard = [min(run_lengths(make_volume((64, 64, 64), s, preset="hard")[1], range(3)))
            for s in range(3)]
    easy = [min(run_lengths(make_volume((64, 64, 64), s)[1], range(3))) for s in range(3)]
    assert np.mean(hard) < 2.6 < np.mean(easy)


def test_hard_preset_has_bright_debris_off_the_sheets():
    # debris is brighter than papyrus and never on a labelled sheet: the brightest labelled
    # voxels are background, though the surface is the brighter class on average
    for seed in (2, 3, 5):
        image, label = make_volume((96, 96, 96), seed, preset="hard")
        assert image[label == 1].mean() > image[label == 0].mean()
        assert (image[label == 0] > 180).sum() > 5 * (image[label == 1] > 180).sum() + 20


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match="easy, hard"):
        make_volume((16, 16, 16), preset="medium")


def test_presets_are_deterministic_and_odd_shapes_work():
    a = make_volume((17, 30, 41), seed=3, preset="hard")
    b = make_volume((17, 30, 41), seed=3, preset="hard")
    assert a[0].shape == (17, 30, 41)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_mixed_layout_cycles_easy_and_hard(tmp_path):
    def images(preset):
        ids = write_competition_layout(tmp_path / preset, 2, (16, 16, 16), seed=3, preset=preset)
        return [tifffile.imread(tmp_path / preset / "train_images" / f"{v}.tif") for v in ids]

    mixed, easy, hard = images("mixed"), images("easy"), images("hard")
    assert np.array_equal(mixed[0], easy[0]) and np.array_equal(mixed[1], hard[1])
    assert not np.array_equal(mixed[1], easy[1])


def test_volumes_made_in_processes_are_the_same_volumes(tmp_path):
    from vesuvius_data.synthetic import write_competition_layout

    def files(d):
        return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    one, two = tmp_path / "one", tmp_path / "two"
    ids = write_competition_layout(one, 3, (24, 24, 24), 5, preset="mixed")
    assert write_competition_layout(two, 3, (24, 24, 24), 5, preset="mixed", workers=2) == ids
    assert files(one) == files(two) and len(files(one)) == 7  # 3 images, 3 labels, the csv


@pytest.mark.parametrize(("preset", "digest"), [("easy", "228d9ef21adf97d8"),
                                                ("hard", "3fd3e86214fe6f45")])
def test_fixed_presets_make_the_volumes_they_always_made(preset, digest):
    """Benchmarks and the demo's figures rest on these bytes: adding the random preset's
    knobs (tears, noise grain, gain, offset) must not move a fixed preset's draws."""
    import hashlib

    image, label = make_volume((24, 28, 32), seed=7, preset=preset)
    assert hashlib.sha256(image.tobytes() + label.tobytes()).hexdigest()[:16] == digest


def test_random_preset_draws_each_volume_from_the_documented_ranges():
    from vesuvius_data.synthetic import RANDOM_RANGES, random_preset

    looks = [random_preset(np.random.default_rng(s)) for s in range(200)]
    lo, hi = RANDOM_RANGES["half_thickness"]
    halves = [h for look in looks for h in look.half_thickness]
    assert lo <= min(halves) and max(halves) <= hi + 1e-9
    assert min(halves) < lo + 0.1 and max(halves) > hi - 0.1  # the whole range is used
    for name in ("noise_grain", "intensity_scale", "intensity_offset", "tear_rate",
                 "bias_field", "debris_per_64cube", "drift"):
        values = [getattr(look, name) for look in looks]
        a, b = RANDOM_RANGES[name]
        assert a <= min(values) and max(values) <= b, name
        assert max(values) - min(values) > 0.8 * (b - a), name
    contrast = [look.papyrus[0] - look.gap[0] for look in looks]
    assert min(contrast) >= RANDOM_RANGES["contrast"][0] - 1e-9
    assert 0.3 < np.mean([look.annotate_region for look in looks]) < 0.7


def test_random_volumes_are_deterministic_valid_and_differ_in_look():
    a = make_volume((48, 48, 48), seed=4, preset="random")
    b = make_volume((48, 48, 48), seed=4, preset="random")
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    means, thickness = [], []
    for seed in range(6):
        image, label = make_volume((48, 48, 48), seed, preset="random")
        f = count_labels(label, LabelSpec()).fractions()  # values checked against the spec
        assert f["foreground"] > 0.01 and f["background"] > 0.1
        assert image[label == 1].mean() > image[label == 0].mean()  # papyrus stays brighter
        means.append(image[label == 0].mean())
        m = label == 1
        thickness.append(min(m.sum() / max(int((np.diff(np.moveaxis(m, ax, 0).astype(np.int8),
                                                        axis=0) == 1).sum()), 1)
                             for ax in range(3)))
    assert np.ptp(means) > 20 and np.ptp(thickness) > 0.5  # gain, offset and sheets vary


def test_out_of_family_looks_lie_outside_every_training_range():
    """bench_quality's third test set must be out of family: each look leaves the ranges that
    the hard preset (what the yardstick trains on) and the random preset draw from."""
    from vesuvius_data.synthetic import OUT_OF_FAMILY, PRESETS, RANDOM_RANGES

    hard, rr = PRESETS["hard"], RANDOM_RANGES
    thickness_lo = min(hard.half_thickness[0], rr["half_thickness"][0])
    thickness_hi = max(hard.half_thickness[1], rr["half_thickness"][1])
    outside = {
        "thin sheets": lambda p: p.half_thickness[1] < thickness_lo,
        "thick sheets": lambda p: p.half_thickness[0] > thickness_hi,
        "strong blur": lambda p: p.blur[0] > max(hard.blur[1], rr["blur"][1] + 0.3),
        "coarse noise": lambda p: p.noise_grain > rr["noise_grain"][1],
        "other scanner": lambda p: p.intensity_scale < rr["intensity_scale"][0]
        and p.intensity_offset > rr["intensity_offset"][1],
    }
    assert set(OUT_OF_FAMILY) == set(outside)
    for name, test in outside.items():
        assert test(OUT_OF_FAMILY[name]), name
        image, label = make_volume((40, 40, 40), 1, preset=OUT_OF_FAMILY[name])
        assert (label == 1).any() and image[label == 1].mean() > image[label == 0].mean()
