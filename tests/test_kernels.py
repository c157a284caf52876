"""The numba cell-count kernel against a plain-numpy reference, on random blockings."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vesuvius_data.index._kernels import CHANNELS, count_cells


def reference_cells(label, image, stride, fg=1, bg=0, ignore=2, air=0, classes=()):
    """Whole-volume numpy version: per-voxel masks, then sums over stride boxes."""
    is_fg = np.isin(label, classes) if classes else label == fg
    is_bg = np.pad(label == bg, 1, constant_values=False)
    touch = np.zeros(label.shape, bool)
    for axis in range(3):
        for shift in (-1, 1):
            touch |= np.roll(is_bg, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    masks = {
        "surface": is_fg,
        "labeled": label != ignore,
        "tissue": image > air if image is not None else np.ones(label.shape, bool),
        "boundary": is_fg & touch,
    }
    names = list(CHANNELS)
    for v in classes:
        masks[f"class {v}"] = label == v
        names.append(f"class {v}")
    out = []
    for name in names:
        m = masks[name].astype(np.int64)
        for axis, s in enumerate(stride):
            m = np.add.reduceat(m, np.arange(0, m.shape[axis], s), axis=axis)
        out.append(m)
    return np.stack(out)


def blockwise_cells(label, image, stride, block, **kw):
    """Sum count_cells over blocks with one-voxel halos, the way the index build does."""
    n_cells = tuple(-(-n // s) for n, s in zip(label.shape, stride, strict=True))
    total = np.zeros((len(CHANNELS) + len(kw.get("classes", ())),) + n_cells, np.int64)
    invalid = 0
    for z0 in range(0, label.shape[0], block[0]):
        for y0 in range(0, label.shape[1], block[1]):
            for x0 in range(0, label.shape[2], block[2]):
                origin = (z0, y0, x0)
                core_end = [min(o + b, n) for o, b, n in zip(origin, block, label.shape,
                                                              strict=True)]
                lo = [max(o - 1, 0) for o in origin]
                hi = [min(e + 1, n) for e, n in zip(core_end, label.shape, strict=True)]
                lab = label[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
                img = None if image is None else image[z0:core_end[0], y0:core_end[1],
                                                       x0:core_end[2]]
                core = tuple(e - o for e, o in zip(core_end, origin, strict=True))
                cell0, counts, bad = count_cells(
                    lab, img, origin=origin, stride=stride, core_shape=core,
                    halo_lo=tuple(o - lo_ for o, lo_ in zip(origin, lo, strict=True)), **kw)
                sl = tuple(slice(c, c + n) for c, n in zip(cell0, counts.shape[1:], strict=True))
                total[(slice(None),) + sl] += counts
                invalid += bad
    return total, invalid


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 19)] * 3),
    stride=st.tuples(*[st.integers(1, 7)] * 3),
    block=st.tuples(*[st.integers(1, 11)] * 3),
    p=st.sampled_from([(0.3, 0.1, 0.6), (0.0, 1.0, 0.0), (0.5, 0.5, 0.0), (0.2, 0.3, 0.5)]),
    with_image=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_kernel_matches_reference_on_any_blocking(shape, stride, block, p, with_image, seed):
    rng = np.random.default_rng(seed)
    label = rng.choice(np.array([0, 1, 2], np.uint8), size=shape, p=p)
    image = rng.integers(0, 256, shape, dtype=np.uint8) if with_image else None
    got, invalid = blockwise_cells(label, image, stride, block, air_threshold=100)
    np.testing.assert_array_equal(got, reference_cells(label, image, stride, air=100))
    assert invalid == 0


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 19)] * 3),
    stride=st.tuples(*[st.integers(1, 7)] * 3),
    block=st.tuples(*[st.integers(1, 11)] * 3),
    k=st.integers(1, 5),
    with_ignore=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_multiclass_kernel_matches_reference_on_any_blocking(shape, stride, block, k,
                                                            with_ignore, seed):
    """Multi-class specs: one channel per foreground class (values 3..3+k, background 20,
    ignore 255): surface is all of them, boundary any of them touching background."""
    rng = np.random.default_rng(seed)
    classes = tuple(range(3, 3 + k))
    values = np.array((20,) + classes + ((255,) if with_ignore else ()), np.uint8)
    label = rng.choice(values, size=shape)
    kw = {"background": 20, "ignore": 255, "classes": classes}
    got, invalid = blockwise_cells(label, None, stride, block, **kw)
    np.testing.assert_array_equal(got, reference_cells(label, None, stride, bg=20, ignore=255,
                                                       classes=classes))
    assert invalid == 0
    label.flat[0] = 100  # a value of no class: counted as invalid, whatever the blocking
    assert blockwise_cells(label, None, stride, block, **kw)[1] == 1


@settings(max_examples=25, deadline=None)
@given(shape=st.tuples(*[st.integers(2, 12)] * 3), stride=st.tuples(*[st.integers(1, 5)] * 3),
       seed=st.integers(0, 2**16))
def test_custom_label_spec_and_invalid_values(shape, stride, seed):
    rng = np.random.default_rng(seed)
    label = rng.choice(np.array([255, 7, 9, 3], np.uint8), size=shape)  # 3 is invalid
    spec = {"foreground": 7, "background": 255, "ignore": 9}
    got, invalid = blockwise_cells(label, None, stride, (5, 4, 3), **spec)
    ref = reference_cells(label, None, stride, fg=7, bg=255, ignore=9)
    np.testing.assert_array_equal(got, ref)
    assert invalid == int((label == 3).sum())


def test_single_block_without_halo_sees_volume_faces_as_non_background():
    label = np.zeros((3, 3, 3), np.uint8)
    label[1, 1, 1] = 1  # surface voxel surrounded by background -> boundary
    label[0, 0, 0] = 1  # corner voxel: neighbours (0,0,1),(0,1,0),(1,0,0) are background
    _, counts, _ = count_cells(label, None, origin=(0, 0, 0), stride=(3, 3, 3))
    assert counts[CHANNELS.index("boundary")].sum() == 2
    label[:] = 1  # all surface, no background anywhere: no boundary, even at the faces
    _, counts, _ = count_cells(label, None, origin=(0, 0, 0), stride=(3, 3, 3))
    assert counts[CHANNELS.index("boundary")].sum() == 0
    assert counts[CHANNELS.index("surface")].sum() == 27


def test_rejects_non_uint8_labels():
    with pytest.raises(ValueError, match="uint8"):
        count_cells(np.zeros((2, 2, 2), np.int32), None, origin=(0, 0, 0), stride=(1, 1, 1))


def test_cells_wider_than_255_voxels_are_counted_in_several_runs():
    """Runs use 8-bit accumulators; a 300-voxel cell must be split, not overflow."""
    rng = np.random.default_rng(0)
    label = rng.choice(np.array([0, 1, 2], np.uint8), size=(3, 4, 700), p=(0.2, 0.6, 0.2))
    image = rng.integers(0, 256, label.shape, dtype=np.uint8)
    _, counts, _ = count_cells(label, image, origin=(0, 0, 0), stride=(3, 4, 300),
                               air_threshold=10)
    np.testing.assert_array_equal(counts, reference_cells(label, image, (3, 4, 300), air=10))


@pytest.mark.parametrize("air", [-1, 0, 254, 255, 1000])
def test_air_thresholds_outside_the_dtype_range(air):
    image = np.arange(256, dtype=np.uint8).reshape(4, 8, 8)
    label = np.zeros(image.shape, np.uint8)
    _, counts, _ = count_cells(label, image, origin=(0, 0, 0), stride=(4, 8, 8),
                               air_threshold=air)
    assert counts[CHANNELS.index("tissue")].sum() == int((image.astype(int) > air).sum())


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="this is that run")
def test_kernels_agree_with_references_as_plain_python_too():
    """The same tests with numba's JIT off: the kernels' Python reads the same as what numba
    compiles, so a typed-numba quirk cannot hide a logic bug (and coverage tools see them)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           __file__], env=os.environ | {"NUMBA_DISABLE_JIT": "1"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" in proc.stdout  # this test skipped itself
