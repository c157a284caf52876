"""Strategies keep their promises: one contract for all, and each one's own distribution."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from scipy import stats

from vesuvius_data import PatchIndex, VolumeSource, build_index
from vesuvius_data.sampling import STRATEGIES, CdfSampler, make_strategy
from vesuvius_data.sampling.sum_tree import SumTree
from vesuvius_data.synthetic import make_volume


@pytest.fixture(scope="module")
def index() -> PatchIndex:
    """Indexes of three synthetic volumes with varied surface content (a few hundred rows)."""
    sources = []
    for i, shape in enumerate([(64, 64, 64), (48, 64, 64), (64, 48, 56)]):
        _, label = make_volume(shape, seed=10 + i)
        if i == 2:
            label[:, :, :28] = 2  # half unlabeled: rows with low labeled_ratio
        sources.append(VolumeSource(f"v{i}", da.from_array(label, chunks=32)))
    return build_index(sources, 16, 8, progress=False)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
class TestContract:
    def test_draws_are_candidate_rows_with_promised_support(self, index, name):
        s = make_strategy(name, index)
        rows = s.sample(np.random.default_rng(0), 5000)
        assert rows.dtype == np.int64 and rows.shape == (5000,)
        p = s.probabilities()
        assert p.shape == (len(index),) and np.all(p >= 0)
        assert p.sum() == pytest.approx(1.0)
        assert np.all(p[rows] > 0)
        assert set(np.flatnonzero(p > 0)) <= set(s.candidates)
        assert np.all(index.labeled_ratio[rows] >= s.min_labeled_ratio)

    def test_deterministic_from_the_generator(self, index, name):
        a = make_strategy(name, index).sample(np.random.default_rng(7), 100)
        b = make_strategy(name, index).sample(np.random.default_rng(7), 100)
        c = make_strategy(name, index).sample(np.random.default_rng(8), 100)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)

    def test_feedback_and_state_round_trip(self, index, name):
        """Stateful strategies (hard-negative) move with feedback and their state restores the
        moved distribution; stateless ones ignore feedback and have no state to lose."""
        s, fresh = make_strategy(name, index), make_strategy(name, index)
        rows = np.arange(0, len(index), 3)
        s.update(rows, np.linspace(0, 2, len(rows)))
        moved = not np.allclose(s.probabilities(), fresh.probabilities())
        assert moved == (name == "hard-negative")
        if not moved:
            assert s.state_dict() == {"name": name}  # nothing but its name to restore
            return
        t = make_strategy(name, index)
        t.load_state_dict(s.state_dict())
        np.testing.assert_allclose(t.probabilities(), s.probabilities())
        np.testing.assert_array_equal(t.sample(np.random.default_rng(3), 50),
                                      s.sample(np.random.default_rng(3), 50))

    def test_frequencies_match_probabilities(self, index, name):
        s = make_strategy(name, index)
        n = 40_000
        counts = np.bincount(s.sample(np.random.default_rng(11), n), minlength=len(index))
        p = s.probabilities()
        expected = p[p > 0] * n
        _, pvalue = stats.chisquare(counts[p > 0], expected)
        assert pvalue > 1e-3, f"{name}: draws do not follow probabilities() (p={pvalue:.2g})"
        assert counts[p == 0].sum() == 0


def test_unknown_name_lists_valid_ones(index):
    with pytest.raises(ValueError, match="valid: balanced, hard-negative, label-weighted, uniform"):
        make_strategy("stratified", index)


def test_empty_candidate_set_is_a_clear_error(index):
    with pytest.raises(ValueError, match="empty candidate set.*lower min_labeled_ratio"):
        make_strategy("uniform", index, min_labeled_ratio=1.0)


def test_uniform_is_uniform_over_candidates(index):
    s = make_strategy("uniform", index, min_labeled_ratio=0.3)
    p = s.probabilities()
    assert np.allclose(p[s.candidates], 1 / len(s.candidates))
    assert np.all(p[index.labeled_ratio < 0.3] == 0)


@pytest.mark.parametrize(("fg_share", "fg_min", "bins"), [(1 / 3, "auto", None), (0.5, 0.1, None),
                                                          (0.2, "auto", 4)])
def test_balanced_realizes_its_target_share(index, fg_share, fg_min, bins):
    s = make_strategy("balanced", index, fg_share=fg_share, fg_min=fg_min, bins=bins)
    rows = s.sample(np.random.default_rng(5), 20_000)
    threshold = s.fg_min
    realized = float(np.mean(index.fg_ratio[rows] > threshold))
    # binomial sd at n=20000 is <= 0.0036: 0.015 is > 4 sd
    assert realized == pytest.approx(fg_share, abs=0.015)
    if bins:  # strata are drawn equally often within each pool
        fg_rows = rows[index.fg_ratio[rows] > threshold]
        pool = index.fg_ratio[s.candidates[s.is_fg]]
        edges = np.quantile(pool, [0.25, 0.5, 0.75])
        per_bin = np.bincount(np.searchsorted(edges, index.fg_ratio[fg_rows], side="right"),
                              minlength=4)
        assert per_bin.min() > 0.8 * per_bin.mean()


def test_balanced_default_threshold_is_the_dataset_surface_share(index):
    s = make_strategy("balanced", index)
    assert s.fg_min == pytest.approx(index.census().foreground_share_of_labeled)


def test_balanced_empty_pool_error_suggests_a_threshold(index):
    with pytest.raises(ValueError, match="foreground pool is empty.*choose fg_min between"):
        make_strategy("balanced", index, fg_min=1.0)


def test_label_weighted_follows_class_weights_and_temperature(index):
    w = index.class_weights()
    s = make_strategy("label-weighted", index)
    r = index.fg_ratio[s.candidates]
    raw = r * w["foreground"] + (1 - r) * w["background"]
    np.testing.assert_allclose(s.probabilities()[s.candidates], raw / raw.sum())
    hot = make_strategy("label-weighted", index, temperature=100.0).probabilities()
    cold = make_strategy("label-weighted", index, temperature=0.25).probabilities()
    assert hot[s.candidates].std() < s.probabilities()[s.candidates].std() < \
        cold[s.candidates].std()
    # surface-rich patches are drawn more often than with uniform sampling
    rows = s.sample(np.random.default_rng(0), 20_000)
    assert index.fg_ratio[rows].mean() > index.fg_ratio[s.candidates].mean()
    with pytest.raises(ValueError, match="temperature"):
        make_strategy("label-weighted", index, temperature=0)


def test_hard_negative_concentrates_on_hard_rows_yet_visits_all(index):
    s = make_strategy("hard-negative", index, floor=0.1)
    cands = s.candidates
    s.update(cands, np.full(len(cands), 0.01))  # every row seen, all easy ...
    hard = cands[:5]
    s.update(hard, np.full(5, 3.0))  # ... but five are hard
    rows = s.sample(np.random.default_rng(1), 50_000)
    share_hard = np.isin(rows, hard).mean()
    p = s.probabilities()
    assert share_hard == pytest.approx(p[hard].sum(), abs=0.01)
    assert share_hard > 0.5  # 5 rows of hundreds get most of the draws
    assert set(np.unique(rows)) == set(cands)  # the floor keeps every row reachable


def test_hard_negative_unseen_rows_come_first(index):
    s = make_strategy("hard-negative", index, floor=0.0)
    seen = s.candidates[: len(s.candidates) // 2]
    s.update(seen, np.full(len(seen), 0.05))
    rows = s.sample(np.random.default_rng(2), 10_000)
    assert np.isin(rows, seen).mean() < 0.1  # unseen (difficulty 1.0) dominate


def test_hard_negative_rejects_bad_feedback(index):
    s = make_strategy("hard-negative", index)
    with pytest.raises(ValueError, match="finite"):
        s.update([0], [np.nan])
    with pytest.raises(ValueError, match="differ in shape"):
        s.update([0, 1], [0.5])
    other = make_strategy("hard-negative", index, min_labeled_ratio=0.5)
    with pytest.raises(ValueError, match="another index"):
        other.load_state_dict(s.state_dict())


def test_sum_tree_matches_cumsum_reference():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 1000):
        w = rng.random(n) * (rng.random(n) > 0.3)
        w[0] += 0.1
        tree = SumTree(n)
        tree.set(np.arange(n), w)
        assert tree.total == pytest.approx(w.sum())
        u = rng.random(2000)
        ref = np.minimum(np.searchsorted(np.cumsum(w) / w.sum(), u, side="right"), n - 1)
        np.testing.assert_array_equal(tree.draw(u), ref)
        assert np.all(w[tree.draw(u)] > 0)


def test_cdf_sampler_rejects_bad_weights():
    for bad in ([], [0.0, 0.0], [1.0, -1.0], [np.inf]):
        with pytest.raises(ValueError):
            CdfSampler(np.array(bad, float))


def test_million_rows_draws_exceed_2_to_24_categories_limit():
    """torch.multinomial refuses > 2^24 categories; the float64 CDF does not."""
    n = 2**24 + 5
    w = np.ones(n)
    w[-1] = 1e6
    rows = CdfSampler(w).draw(np.random.default_rng(0), 1000)
    assert (rows == n - 1).mean() == pytest.approx(1e6 / (n - 1 + 1e6), abs=0.04)
