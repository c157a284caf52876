"""Another field's data end to end: an int16 CT phantom with four classes and anisotropic
voxels, written and read back as NIfTI, then ingested, indexed, sampled by every strategy and
loaded, with the errors such a user meets."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio
from scipy import stats

from vesuvius_data import LabelSpec, VolumeStore, build_index, make_loader
from vesuvius_data.phantoms import PHANTOM_CLASSES, make_organ_phantom
from vesuvius_data.sampling import STRATEGIES, StrategySampler, make_strategy

SPEC = LabelSpec.multiclass(PHANTOM_CLASSES, ignore=255)
SHAPE = (32, 64, 64)


def write_nifti(path, data_zyx: np.ndarray, spacing_zyx) -> None:
    """NIfTI stores (x, y, z); the store keeps (z, y, x)."""
    affine = np.diag([*reversed(spacing_zyx), 1.0])
    nib.save(nib.Nifti1Image(data_zyx.transpose(2, 1, 0), affine), path)


def read_nifti(path) -> tuple[np.ndarray, tuple[float, ...]]:
    img = nib.load(path)
    data = np.asarray(img.dataobj).transpose(2, 1, 0)
    return data, tuple(float(z) for z in reversed(img.header.get_zooms()))


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """Three phantoms: (image, label, spacing) as read back from NIfTI files."""
    tmp = tmp_path_factory.mktemp("nifti")
    out = []
    for i in range(3):
        image, label, spacing = make_organ_phantom(SHAPE, seed=i)
        write_nifti(tmp / f"case{i}_ct.nii.gz", image, spacing)
        write_nifti(tmp / f"case{i}_seg.nii.gz", label, spacing)
        img, sp = read_nifti(tmp / f"case{i}_ct.nii.gz")
        lab, _ = read_nifti(tmp / f"case{i}_seg.nii.gz")
        np.testing.assert_array_equal(img, image)
        out.append((img, lab, sp))
    return out


@pytest.fixture(scope="module")
def organs(tmp_path_factory, phantoms) -> VolumeStore:
    store = VolumeStore.create(tmp_path_factory.mktemp("organs") / "organs.zarr",
                               label_spec=SPEC, chunks=(16, 32, 32))
    for i, (image, label, spacing) in enumerate(phantoms):
        store.add_volume(f"case{i}", image, label, spacing=spacing)
    return store


@pytest.fixture(scope="module")
def index(organs):
    return build_index(organs, (8, 16, 16), (4, 8, 8), progress=False)


def test_store_keeps_dtype_spacing_and_a_census_per_class(organs, phantoms):
    again = VolumeStore.open(organs.location)
    assert again.label_spec == SPEC
    for i, (image, label, spacing) in enumerate(phantoms):
        info = again.info(f"case{i}")
        assert info.spacing == pytest.approx((2.5, 0.8, 0.8)) == spacing
        assert again.zarr_array(f"case{i}", "image").dtype == np.int16
        np.testing.assert_array_equal(again.array(f"case{i}", "image")[...], image)
        counts = np.bincount(label.ravel(), minlength=256)
        assert info.census.class_counts() == {n: int(counts[v]) for n, v in
                                              SPEC.class_values.items()}
        assert info.census.ignore == counts[255]
        fg = image[(label > 0) & (label < 255)].astype(np.float64)
        assert info.intensity["mean"] == pytest.approx(fg.mean())
        assert info.intensity["p99_5"] == pytest.approx(np.percentile(fg, 99.5))


def test_index_counts_every_class_in_every_patch(organs, index, phantoms):
    assert [c for c in index.columns if c.startswith("class_")] == [
        "class_liver", "class_kidney", "class_tumour"]
    assert index.nbytes() / len(index) == 24 + 3 * 4  # 4 bytes per extra class
    rng = np.random.default_rng(0)
    for row in rng.choice(len(index), 60, replace=False):
        label = phantoms[int(index.volume[row])][1]
        z, y, x = index.corners[row]
        window = label[z:z + 8, y:y + 16, x:x + 16]
        for name, value in SPEC.class_values.items():
            assert index.class_count(name)[row] == (window == value).sum(), name
        assert index.labeled[row] == (window != 255).sum()
    weights = index.class_weights()
    counts = index.census().class_counts()
    assert list(weights) == list(PHANTOM_CLASSES)
    total = sum(counts.values())
    assert sum(weights[n] * counts[n] / total for n in counts) == pytest.approx(1.0)
    assert weights["tumour"] > weights["kidney"] > weights["liver"] > weights["background"]
    from vesuvius_data.index.report import format_summary, summarize  # tools/index.py's text

    summary = summarize(index)
    assert summary["classes"]["tumour"]["patches_holding"] == int(
        (index.class_count("tumour") > 0).sum())
    assert "tumour" in format_summary(summary).split("classes (share of labeled")[1]


MULTICLASS_OPTIONS = {"uniform": {}, "hard-negative": {},
                      "balanced": {"class_shares": {"tumour": 0.3, "kidney": 0.2}},
                      "label-weighted": {}}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_keeps_its_distribution_with_classes(index, name):
    """The contract's chi-square test, on the multi-class index."""
    s = make_strategy(name, index, **MULTICLASS_OPTIONS[name])
    n = 40_000
    counts = np.bincount(s.sample(np.random.default_rng(11), n), minlength=len(index))
    p = s.probabilities()
    _, pvalue = stats.chisquare(counts[p > 0], p[p > 0] * n)
    assert pvalue > 1e-3 and counts[p == 0].sum() == 0


def test_balanced_guarantees_each_class_its_share(index):
    """A patch holding a rare class (tumour: ~5 % of patches, kidney ~13 %) comes up at least
    its share of the time, as nnU-Net's per-class oversampling promises."""
    shares = {"tumour": 0.3, "kidney": 0.2}
    s = make_strategy("balanced", index, class_shares=shares)
    rows = s.sample(np.random.default_rng(2), 20_000)
    p = s.probabilities()
    for name, share in shares.items():
        holds = index.class_count(name) > 0
        promised = p[holds].sum()
        assert promised >= share > holds[s.candidates].mean()  # rarer than its share
        # binomial sd at n=20000 is <= 0.0036: 0.015 is > 4 sd
        assert holds[rows].mean() == pytest.approx(promised, abs=0.015)
    for bad, message in (({"tumour": 0.7, "liver": 0.5}, "summing to at most 1"),
                         ({"spleen": 0.2}, "no class 'spleen'")):
        with pytest.raises(ValueError, match=message):
            make_strategy("balanced", index, class_shares=bad)


def test_label_weighted_uses_a_weight_per_class(index):
    w = {"background": 1.0, "liver": 1.0, "kidney": 1.0, "tumour": 50.0}
    s = make_strategy("label-weighted", index, class_weights=w)
    c = s.candidates
    raw = (index.labeled[c] + 49.0 * index.class_count("tumour")[c]) / index.labeled[c]
    np.testing.assert_allclose(s.probabilities()[c], raw / raw.sum())
    with pytest.raises(ValueError, match="one weight per class"):
        make_strategy("label-weighted", index, class_weights={"background": 1, "foreground": 2})


def test_loader_delivers_ct_normalised_int16_patches_with_spacing(organs, index):
    seen = []

    def record_spacing(subject: tio.Subject) -> tio.Subject:  # what a transform is given
        seen.append(subject["image"].spacing)
        return subject

    loader = make_loader(organs, index, "balanced", batch_size=4, num_workers=0, seed=0,
                         samples_per_epoch=64, normalize="ct", transforms=record_spacing,
                         class_shares={"tumour": 0.5})
    pooled = loader.dataset._normalize.keywords  # the dataset-wide clip and z-score
    top = (pooled["hi"] - pooled["mean"]) / pooled["std"]
    tumour = 0
    for batch in loader:
        assert batch["image"].dtype == torch.float32 and torch.isfinite(batch["image"]).all()
        assert float(batch["image"].max()) <= top + 1e-4
        assert set(batch["label"].unique().tolist()) <= {0, 1, 2, 3, 255}
        assert torch.allclose(batch["spacing"], torch.tensor([2.5, 0.8, 0.8]))
        tumour += int((batch["label"] == 3).flatten(1).any(1).sum())
    assert tumour >= 0.4 * 64 and seen[0] == pytest.approx((2.5, 0.8, 0.8))
    window = make_loader(organs, index, "uniform", num_workers=0, samples_per_epoch=8,
                         normalize="window:-200,300")
    image = next(iter(window))["image"]
    assert float(image.min()) >= 0 and float(image.max()) <= 1


def test_torchio_adapter_takes_the_same_class_options(phantoms):
    image, label, spacing = phantoms[0]
    subject = tio.Subject(ct=tio.ScalarImage(tensor=torch.from_numpy(image)[None]),
                          label=tio.LabelMap(tensor=torch.from_numpy(label)[None]))
    sampler = StrategySampler((8, 16, 16), "balanced", label_spec=SPEC, stride=(4, 8, 8),
                              class_shares={"tumour": 0.6})
    patches = list(sampler(subject, 300))
    share = np.mean([bool((p["label"].data == 3).any()) for p in patches])
    assert share >= 0.5


def test_bad_input_names_what_is_wrong(organs, index, tmp_path):
    with pytest.raises(ValueError, match="ignore value 2 is also the value of class 'b'"):
        LabelSpec.multiclass(["background", "a", "b"], ignore=2)
    image, label, _ = make_organ_phantom((8, 16, 16), seed=5)
    store = VolumeStore.create(tmp_path / "s.zarr", label_spec=SPEC)
    with pytest.raises(ValueError, match=r"volume x: label values \[7\] are outside the label "
                                         r"spec \(background=0, liver=1, kidney=2, tumour=3"):
        store.add_volume("x", image, np.where(label == 2, 7, label).astype(np.uint8))
    bad = image.astype(np.float32)
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="volume y: image has 1 NaN or infinite voxels"):
        store.add_volume("y", bad, label)
    with pytest.raises(ValueError, match=r"spacing must be three positive numbers"):
        store.add_volume("z", image, label, spacing=(1.0, 0.0, 1.0))
    store.add_volume("f", image.astype(np.float32), label)
    with pytest.raises(ValueError, match="volume f: normalize 'unit' needs an integer image"):
        make_loader(store, build_index(store, 8, 4, progress=False), "uniform",
                    num_workers=0, normalize="unit")
    with pytest.raises(ValueError, match="write the window as window:LO,HI"):
        make_loader(organs, index, "uniform", num_workers=0, normalize="window:-200")


def test_the_trainer_says_it_segments_one_class(organs, tmp_path, capsys):
    from trainer.cli import main

    assert main([f"--data_dir={organs.location}", f"--out={tmp_path / 'run'}"]) == 2
    assert "multi-class labels" in capsys.readouterr().err
