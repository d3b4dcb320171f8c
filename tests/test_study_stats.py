"""The study's paired statistics, against hand-worked cases and naive reference implementations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from weighted_mtp.report.paired import (
    EXACT_MAX_FLIPS,
    compare_paired,
    holm_adjust,
    paired_differences,
    sign_flip_p_value,
    verdict,
)


def test_sign_flip_exact_hand_cases():
    # d = [1, -1, 2], observed |sum| = 2. The 8 sign patterns give sums 4, 0, 2, -2, 2, -2, 0, -4:
    # six of them reach |sum| >= 2, so p = 6/8.
    assert sign_flip_p_value([1.0, -1.0, 2.0]) == pytest.approx(0.75)
    # d = [1, 1, 1]: only the all-plus and all-minus patterns reach |sum| 3: p = 2/8.
    assert sign_flip_p_value([1.0, 1.0, 1.0]) == pytest.approx(0.25)
    # Zero differences do not move the sum and are dropped: [0.5, 0.5, 1, 0] -> sums of
    # +-0.5 +-0.5 +-1 are 2, 1, 1, 0, 0, -1, -1, -2: two reach |2|, p = 2/8.
    assert sign_flip_p_value([0.5, 0.5, 1.0, 0.0]) == pytest.approx(0.25)
    assert sign_flip_p_value([0.0, 0.0]) == 1.0
    assert sign_flip_p_value([]) == 1.0


def _naive_sign_flip(d):
    d = [x for x in d if x != 0]
    observed = abs(sum(d))
    hits = total = 0
    for signs in itertools.product((1, -1), repeat=len(d)):
        total += 1
        hits += abs(sum(s * x for s, x in zip(signs, d))) >= observed - 1e-9
    return hits / total


def test_sign_flip_exact_matches_naive_enumeration():
    rng = np.random.default_rng(3)
    for m in (4, 9, 12):
        d = rng.choice([-1.0, -0.5, 0.0, 0.3, 1.0], size=m)
        assert sign_flip_p_value(d) == pytest.approx(_naive_sign_flip(list(d)))


def test_sign_flip_monte_carlo_agrees_with_exact():
    # 18 non-zero differences: sampled. The exact p of the same data by enumeration (2^18
    # patterns, computed here directly) must be within Monte Carlo error (se ~ 0.003 at 20k).
    rng = np.random.default_rng(0)
    d = rng.normal(0.15, 1.0, size=EXACT_MAX_FLIPS + 2)
    m = d.size
    patterns = ((np.arange(2 ** m)[:, None] >> np.arange(m)[None, :]) & 1) * 2 - 1
    exact = float(np.mean(np.abs(patterns @ d) >= abs(d.sum()) - 1e-9))
    sampled = sign_flip_p_value(d, n_resamples=20_000, seed=1)
    assert abs(sampled - exact) < 0.015
    assert 0 < sign_flip_p_value(np.full(40, 1.0), n_resamples=500) <= 1 / 501 + 1e-12  # never 0


def test_holm_hand_case():
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm_adjust([0.2]) == pytest.approx([0.2])
    assert holm_adjust([]) == []


def test_paired_differences_average_seeds_per_task():
    a = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])   # seed means 0.5, 0, 1
    b = np.array([[0.0, 1.0, 1.0]])                     # one seed
    assert paired_differences(a, b) == pytest.approx([0.5, -1.0, 0.0])
    with pytest.raises(ValueError, match="same tasks"):
        paired_differences(a, np.zeros(4))


def _naive_paired_bootstrap(a, b, n_boot, seed, alpha):
    """Resample task indices and recompute both arms' means on the same tasks."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    stats = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        stats.append(a[:, idx].mean() - b[:, idx].mean())
    return np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])


def test_compare_paired_matches_naive_bootstrap_and_counts():
    rng = np.random.default_rng(7)
    a = (rng.random((3, 30)) < 0.4).astype(float)
    b = (rng.random((3, 30)) < 0.3).astype(float)
    cmp = compare_paired(a, b, n_boot=400, seed=5)
    lo, hi = _naive_paired_bootstrap(a, b, 400, 5, 0.05)
    assert (cmp.ci_lo, cmp.ci_hi) == pytest.approx((lo, hi))
    assert cmp.diff == pytest.approx(a.mean() - b.mean())
    assert (cmp.mean_a, cmp.mean_b) == pytest.approx((a.mean(), b.mean()))
    d = a.mean(0) - b.mean(0)
    assert (cmp.n_a_better, cmp.n_b_better) == (int((d > 0).sum()), int((d < 0).sum()))
    assert cmp.n_tasks == 30


def test_identical_arms_are_not_different():
    a = np.array([[1.0, 0.0, 1.0, 0.0]])
    cmp = compare_paired(a, a.copy(), n_boot=100)
    assert (cmp.diff, cmp.ci_lo, cmp.ci_hi, cmp.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert verdict(cmp.diff, cmp.p_value) == "no significant difference"


def test_a_clear_difference_is_significant():
    # 20 tasks all solved by a, none by b: every one of the 2^20 sign patterns but two has a
    # smaller |sum|, so p = 2 / 2^20 (sampled: 1 / (1 + draws)).
    a, b = np.ones((2, 20)), np.zeros((2, 20))
    cmp = compare_paired(a, b, n_boot=200, n_resamples=2000)
    assert cmp.diff == 1.0 and cmp.ci_lo == 1.0 and cmp.p_value == pytest.approx(1 / 2001)
    assert verdict(cmp.diff, cmp.p_value) == "significantly higher"
    assert verdict(-0.1, 0.01) == "significantly lower"
    assert verdict(0.3, 0.05) == "no significant difference"
    assert verdict(0.3, math.nan) == "no significant difference"
