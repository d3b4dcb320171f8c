"""Critic evaluation metrics vs hand counts and naive pair loops."""

from __future__ import annotations

import math
import random

import pytest
import torch

from weighted_mtp.metrics import (
    best_f1_threshold,
    class_means,
    f1_at_threshold,
    position_correlation,
    roc_auc,
    spikiness,
)


def _naive_auc(s, y):
    pos = [a for a, l in zip(s, y) if l]
    neg = [a for a, l in zip(s, y) if not l]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_hand_cases():
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    # pos {0.4, 0.8}, neg {0.1, 0.4, 0.9}: pairs 0.4>0.1 (1), 0.4=0.4 (.5), 0.4<0.9, 0.8>0.1, 0.8>0.4, 0.8<0.9
    assert roc_auc(torch.tensor([0.4, 0.8, 0.1, 0.4, 0.9]), torch.tensor([1, 1, 0, 0, 0])) == pytest.approx(3.5 / 6)
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))
    assert roc_auc([0.2, 0.7], [False, True]) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pair_loop(seed):
    rng = random.Random(seed)
    n = rng.randint(5, 60)
    s = [rng.randint(0, 6) / 6 for _ in range(n)]  # heavy ties
    y = [rng.randint(0, 1) for _ in range(n)]
    y[0], y[1] = 0, 1
    assert roc_auc(s, y) == pytest.approx(_naive_auc(s, y), abs=1e-12)


def test_f1():
    s, y = [0.9, 0.7, 0.6, 0.3, 0.2], [1, 0, 1, 1, 0]
    # threshold 0.5: pred 1,1,1,0,0 -> TP 2, FP 1, FN 1 -> 4/6
    assert f1_at_threshold(s, y, 0.5) == pytest.approx(4 / 6)
    assert f1_at_threshold(s, y, 0.6) == pytest.approx(4 / 6)  # >= threshold is positive
    assert f1_at_threshold(s, y, 1.0) == 0.0
    assert f1_at_threshold([0.1, 0.2], [0, 0], 0.5) == 0.0  # 0/0 -> 0
    # best: t=0.3 -> TP 3, FP 1, FN 0 -> 6/7 beats t=0.9 (2/4), t=0.6 (4/6), t=0.2 (6/8)
    thr, f1 = best_f1_threshold(s, y)
    assert thr == pytest.approx(0.3) and f1 == pytest.approx(6 / 7)
    for t in s:
        assert f1_at_threshold(s, y, t) <= f1 + 1e-12


def test_class_means():
    cm = class_means([1.0, 3.0, 0.0, 2.0], [1, 1, 0, 0])
    assert cm == {"mean_correct": 2.0, "mean_incorrect": 1.0, "gap": 1.0}
    assert math.isnan(class_means([1.0], [1])["mean_incorrect"])


def test_position_correlation():
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    pos = torch.tensor([[9.0, 0, 1, 2, 9.0], [0, 1, 2, 3, 4]])
    assert position_correlation(pos * 2 + 1, mask) == pytest.approx(1.0)
    assert position_correlation(-pos, mask) == pytest.approx(-1.0)
    assert math.isnan(position_correlation(torch.full((2, 5), 0.3), mask))
    vals = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]])
    m = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    # x = [0,1,2,0,1], y = [1,0,1,0,1]; means 0.8, 0.6; dx = [-.8,.2,1.2,-.8,.2], dy = [.4,-.6,.4,-.6,.4]
    # sum dx dy = -.32 - .12 + .48 + .48 + .08 = 0.6, sum dx^2 = 2.8, sum dy^2 = 1.2
    assert position_correlation(vals, m) == pytest.approx(0.6 / math.sqrt(2.8 * 1.2))


def test_spikiness():
    v = torch.tensor([[0.0, 0, 1, 1, 5], [0, 1, 2, 3, 4], [0, 7, 0, 0, 0], [2, 2, 2, 2, 2]])
    m = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    # row0: dV = [0,1,0] -> 1 / (1/3) = 3; row1: all 1 -> 1; row2 too short; row3 flat -> skipped
    assert spikiness(v, m) == pytest.approx((3.0 + 1.0) / 2)
    assert spikiness(v[:1], m[:1]) == pytest.approx(3.0)
    assert math.isnan(spikiness(v[2:], m[2:]))
