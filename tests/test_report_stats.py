"""The report's confidence intervals, checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from weighted_mtp.report.stats import bootstrap_ci, mean_ci_over_seeds, t_quantile_975


def test_two_seeds_use_t_with_one_degree_of_freedom():
    # mean 0.5, sample std |0.6 - 0.4| / sqrt(2) = 0.14142, se = std / sqrt(2) = 0.1,
    # half width = 12.7062 * 0.1
    mean, lo, hi = mean_ci_over_seeds([0.4, 0.6])
    assert mean == pytest.approx(0.5)
    assert lo == pytest.approx(0.5 - 1.27062)
    assert hi == pytest.approx(0.5 + 1.27062)


def test_three_seeds_hand_case():
    # values 1, 2, 3: mean 2, sample std 1, se 1/sqrt(3), t(2) = 4.3027
    mean, lo, hi = mean_ci_over_seeds([1.0, 2.0, 3.0])
    half = 4.3027 / math.sqrt(3)
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))


def test_constant_seeds_give_zero_width():
    assert mean_ci_over_seeds([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3, 0.3))


def test_bounds_clip_the_interval():
    # mean 0.95, se 0.05, half width 12.7062 * 0.05 = 0.63531: the top runs past 1
    assert mean_ci_over_seeds([0.9, 1.0], bounds=(0.0, 1.0)) == pytest.approx((0.95, 0.95 - 0.63531, 1.0))
    assert mean_ci_over_seeds([0.9, 1.0])[2] == pytest.approx(0.95 + 0.63531)
    assert mean_ci_over_seeds([0.0, 0.1], bounds=(0.0, 1.0))[1] == 0.0


def test_one_seed_has_no_interval_and_none_has_no_mean():
    mean, lo, hi = mean_ci_over_seeds([0.7])
    assert mean == 0.7 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in mean_ci_over_seeds([]))


def test_t_table_edges():
    assert t_quantile_975(1) == 12.7062
    assert t_quantile_975(30) == 2.0423
    assert t_quantile_975(31) == 1.96
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_bootstrap_constant_data_zero_width():
    assert bootstrap_ci(np.full((3, 20), 0.25)) == pytest.approx((0.25, 0.25, 0.25))


def test_bootstrap_resamples_tasks_not_seeds():
    # Every task has the same seed-mean (0.5) although seeds disagree: resampling tasks cannot
    # move the statistic, so the interval has zero width. Resampling seed-task cells would not.
    per_task = np.array([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]])
    assert bootstrap_ci(per_task, n_boot=500) == pytest.approx((0.5, 0.5, 0.5))


def test_bootstrap_two_tasks_hand_case():
    # Tasks worth 0 and 1: a resample of 2 tasks has mean 0, 0.5 or 1 with probability 1/4, 1/2,
    # 1/4, so the 2.5% / 97.5% percentiles are 0 and 1.
    mean, lo, hi = bootstrap_ci(np.array([[0.0, 1.0]]), n_boot=4000)
    assert (mean, lo, hi) == (0.5, 0.0, 1.0)


def test_bootstrap_reproducible_and_contains_mean():
    rng = np.random.default_rng(1)
    per_task = rng.uniform(size=(3, 50))
    a = bootstrap_ci(per_task, seed=7)
    assert a == bootstrap_ci(per_task, seed=7)
    assert a != bootstrap_ci(per_task, seed=8)
    mean, lo, hi = a
    assert mean == pytest.approx(per_task.mean())
    assert lo < mean < hi


def test_bootstrap_wider_with_fewer_tasks():
    rng = np.random.default_rng(2)
    per_task = (rng.uniform(size=(3, 400)) < 0.4).astype(float)
    _, lo_all, hi_all = bootstrap_ci(per_task)
    _, lo_few, hi_few = bootstrap_ci(per_task[:, :25])
    assert hi_few - lo_few > 2 * (hi_all - lo_all)


def test_bootstrap_one_dimensional_is_one_seed():
    x = np.array([0.1, 0.9, 0.4, 0.6])
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x[None, :], seed=3)
