"""Critic credit that measures credit (issue 15): the value-difference form is blind to the
critic's level, a trend-free value walk gives weights unrelated to the position in the response,
the terminal-reward form needs calibrated values, the weight diagnostics count what they claim,
and the combined scheme and all-combinations pairing do what they say."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from weighted_mtp.weighting.config import WeightingConfig
from weighted_mtp.data.sampling import sample_pairs
from weighted_mtp.models.critic import CriticModel
from weighted_mtp.weighting import (
    RunningMoments,
    WeightingContext,
    WeightingInputs,
    combined,
    critic,
    distance_to_end_correlation,
    gae_advantages,
    rho1,
    td_errors,
    weight_statistics,
)
from weighted_mtp.weighting.statistics import tokens_to_end


def _spans_mask(B, S, seed):
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(B, S, dtype=torch.bool)
    for b in range(B):
        t0 = int(torch.randint(1, S // 4, (1,), generator=g))
        n = int(torch.randint(S // 2, S - t0 + 1, (1,), generator=g))
        m[b, t0:t0 + n] = True
    return m


def test_value_delta_hand_example():
    # values after reading tokens 0..4; response targets 2..4 (token 1 is the last prompt token)
    values = torch.tensor([[9.0, 0.5, 0.6, 0.4, 0.8, 9.0]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 0]], dtype=torch.bool)
    delta = td_errors(values, torch.tensor([1.0]), mask, 0.9, credit="value_delta")
    torch.testing.assert_close(delta, torch.tensor([[0.0, 0.0, 0.1, -0.2, 0.4, 0.0]]))
    # GAE with gamma*lam = 0.5: A_4 = 0.4, A_3 = -0.2 + 0.5*0.4 = 0.0, A_2 = 0.1 + 0.5*0.0 = 0.1
    adv = gae_advantages(values, torch.tensor([1.0]), mask, 1.0, 0.5, credit="value_delta")
    torch.testing.assert_close(adv, torch.tensor([[0.0, 0.0, 0.1, 0.0, 0.4, 0.0]]))
    # gamma = lam = 1 telescopes to V(s_T) - V(s_{t-1})
    adv = gae_advantages(values, torch.tensor([0.0]), mask, 1.0, 1.0, credit="value_delta")
    torch.testing.assert_close(adv, torch.tensor([[0.0, 0.0, 0.3, 0.2, 0.4, 0.0]]))


@pytest.mark.parametrize("offset", [-1.0, 0.5, 2.0])
def test_value_delta_weights_ignore_the_critics_level(offset):
    B, S = 6, 40
    mask = _spans_mask(B, S, seed=1)
    # float64 values, so that `values + offset` is itself exact to well below 1e-6
    values = torch.randn(B, S, generator=torch.Generator().manual_seed(2), dtype=torch.float64).cumsum(1) * 0.1
    rewards = torch.tensor([1.0, 0, 1, 1, 0, 1])

    def weights(v):
        ctx = WeightingContext(cfg=WeightingConfig(scheme="critic"), gamma=1.0, lam=0.95, stats=RunningMoments())
        return critic(WeightingInputs(mask=mask, values=v, rewards=rewards), ctx).weights

    base, shifted = weights(values), weights(values + offset)
    assert float((base - shifted).abs().max()) <= 1e-6
    # the terminal-reward form moves: the reward is compared with the shifted level
    cfg = WeightingConfig(scheme="critic", critic_credit="terminal_reward", whiten=False)
    ctx = WeightingContext(cfg=cfg, gamma=1.0, lam=0.95)
    a = critic(WeightingInputs(mask=mask, values=values, rewards=rewards), ctx).weights
    b = critic(WeightingInputs(mask=mask, values=values + offset, rewards=rewards), ctx).weights
    assert float((a - b).abs().max()) > 0.05


def test_trend_free_random_walk_gives_weights_unrelated_to_position():
    B, S = 32, 96
    mask = _spans_mask(B, S, seed=3)
    values = torch.randn(B, S, generator=torch.Generator().manual_seed(4)).cumsum(1) * 0.05
    rewards = torch.ones(B)
    ctx = WeightingContext(cfg=WeightingConfig(scheme="critic"), gamma=1.0, lam=0.95, stats=RunningMoments())
    w = critic(WeightingInputs(mask=mask, values=values, rewards=rewards), ctx).weights
    corr = distance_to_end_correlation(w, mask)
    assert abs(corr) <= 0.3
    # the same values with the terminal-reward form ramp toward the end (the bug this replaced)
    cfg = WeightingConfig(scheme="critic", critic_credit="terminal_reward")
    ctx = WeightingContext(cfg=cfg, gamma=1.0, lam=0.95, stats=RunningMoments())
    w_old = critic(WeightingInputs(mask=mask, values=values, rewards=rewards), ctx).weights
    assert distance_to_end_correlation(w_old, mask) < -0.5


def test_distance_to_end_correlation_matches_scipy():
    mask = _spans_mask(5, 30, seed=5)
    w = torch.rand(5, 30, generator=torch.Generator().manual_seed(6)).round(decimals=1)  # with ties
    d = tokens_to_end(mask)
    assert d[mask].min() == 0 and int((d == 0)[mask].sum()) == 5  # one last token per row
    want = spearmanr(w[mask].numpy(), d[mask].numpy()).correlation
    assert distance_to_end_correlation(w, mask) == pytest.approx(want, abs=1e-12)
    # a weight that is the distance itself correlates perfectly; uniform weights have no correlation
    assert distance_to_end_correlation(d.float(), mask) == pytest.approx(1.0)
    assert math.isnan(distance_to_end_correlation(mask.float(), mask))


def test_fraction_at_min_counts_float32_weights_clamped_to_the_bound():
    mask = torch.ones(1, 4, dtype=torch.bool)
    w = torch.tensor([[0.05, 0.2, 5.0, 1.0]], dtype=torch.float64).clamp(0.1, 3.0).float()
    stats = weight_statistics(w, mask, min_weight=0.1, max_weight=3.0)
    assert float(stats["fraction_at_min"]) == 0.25 and float(stats["fraction_at_max"]) == 0.25


def test_combined_is_critic_times_rho1_with_mean_one():
    B, S = 4, 20
    mask = _spans_mask(B, S, seed=7)
    g = torch.Generator().manual_seed(8)
    inputs = WeightingInputs(mask=mask, values=torch.randn(B, S, generator=g), rewards=torch.ones(B),
                             policy_ce=torch.rand(B, S, generator=g) * 3 * mask,
                             reference_ce=torch.rand(B, S, generator=g) * 3 * mask)
    cfg = WeightingConfig(scheme="combined", rho1_k_percent=0.5)
    ctx = lambda: WeightingContext(cfg=cfg, gamma=1.0, lam=0.95, stats=RunningMoments())  # noqa: E731
    w = combined(inputs, ctx()).weights
    product = critic(inputs, ctx()).weights * rho1(inputs, ctx()).weights
    want = product / product[mask].mean()
    torch.testing.assert_close(w, want)
    assert float(w[mask].mean()) == pytest.approx(1.0, abs=1e-6) and float(w[~mask].abs().sum()) == 0


def test_bce_critic_values_become_probabilities(micro_model_dir):
    bce = CriticModel.build(micro_model_dir, training_loss="bce")
    logits = torch.tensor([[-2.0, 0.0, 3.0]])
    torch.testing.assert_close(bce.credit_values(logits), torch.sigmoid(logits))
    assert bce.values_are_probabilities
    pairwise = CriticModel.build(micro_model_dir, training_loss="pairwise")
    assert torch.equal(pairwise.credit_values(logits), logits) and not pairwise.values_are_probabilities
    assert not CriticModel.build(micro_model_dir).values_are_probabilities  # not recorded: unknown


def test_critic_config_records_its_training_loss(micro_model_dir, tmp_path):
    CriticModel.build(micro_model_dir, training_loss="mse").save_pretrained(tmp_path / "c")
    assert CriticModel.from_pretrained(tmp_path / "c").training_loss == "mse"


class _Index:
    """The fields sample_pairs reads: one problem with 2 correct and 3 incorrect solutions."""

    path = "stand-in"

    def __init__(self):
        self.is_correct = np.array([1, 1, 0, 0, 0], dtype=bool)
        self.problem_index = np.zeros(5, dtype=np.int64)
        self.difficulty = np.zeros(5, dtype=np.int64)
        self.output_chars = np.full(5, 10, dtype=np.int64)


def test_all_combinations_pairing_offers_every_correct_incorrect_product():
    pairs, _ = sample_pairs(_Index(), 100, seed=0, max_pairs_per_problem=None, pairing="all_combinations")
    assert sorted(pairs) == [(p, n) for p in (0, 1) for n in (2, 3, 4)]
    one, _ = sample_pairs(_Index(), 100, seed=0, max_pairs_per_problem=None)
    assert len(one) == 2 and len({p for p, _ in one}) == 2 and len({n for _, n in one}) == 2
