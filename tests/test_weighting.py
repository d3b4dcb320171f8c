"""Weighting schemes: the shared contract, hand-worked critic weights, running whitening, Rho-1
selection, the two controls (shuffled, random_matched) and the weight statistics."""

from __future__ import annotations

import math
import typing

import numpy as np
import pytest
import torch

from weighted_mtp.weighting.config import WeightingConfig
from weighted_mtp.weighting import (
    WEIGHTINGS,
    RunningMoments,
    WeightingContext,
    WeightingInputs,
    critic,
    random_matched,
    rho1,
    shuffled,
    weight_statistics,
)


def _mask(spans, S):
    m = torch.zeros(len(spans), S, dtype=torch.bool)
    for b, (t0, n) in enumerate(spans):
        m[b, t0 : t0 + n] = True
    return m


def _random_inputs(B, S, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, S // 4, (B,), generator=g).tolist()
    lens = [int(torch.randint(S // 4, S - t0 + 1, (1,), generator=g)) for t0 in starts]
    mask = _mask(list(zip(starts, lens, strict=True)), S)
    values = torch.rand(B, S, generator=g)
    ce = torch.rand(B, S, generator=g) * 3 * mask
    ref = torch.rand(B, S, generator=g) * 3 * mask
    if requires_grad:
        values.requires_grad_()
        ce.requires_grad_()
    rewards = torch.randint(0, 2, (B,), generator=g).float()
    return WeightingInputs(mask=mask, values=values, rewards=rewards, policy_ce=ce, reference_ce=ref)


def _ctx(seed=0, **cfg):
    gen = torch.Generator().manual_seed(seed)
    return WeightingContext(cfg=WeightingConfig(**cfg), stats=RunningMoments(), generator=gen)


# ---------------------------------------------------------------- contract


def test_registry_covers_config_schemes():
    hints = typing.get_type_hints(WeightingConfig)
    assert set(WEIGHTINGS) == set(typing.get_args(hints["scheme"]))


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
@pytest.mark.parametrize("selection", ["topk", "soft"])
def test_every_scheme_satisfies_the_contract(name, selection):
    inputs = _random_inputs(6, 40, requires_grad=True)
    inputs.mask[1] = False  # an empty row
    res = WEIGHTINGS[name](inputs, _ctx(rho1_selection=selection))
    w, m = res.weights, inputs.mask
    assert w.shape == m.shape and w.dtype == torch.float32 and w.device == m.device
    assert not w.requires_grad and w.grad_fn is None
    assert (w[~m] == 0).all() and torch.isfinite(w).all() and (w >= 0).all()
    for k, v in res.metrics.items():
        assert v.dim() == 0 and not v.requires_grad, k


@pytest.mark.parametrize(
    "name,missing",
    [
        ("critic", "values"),
        ("critic", "rewards"),
        ("rho1", "reference_ce"),
        ("random_matched", "values"),
        ("shuffled", "rewards"),
    ],
)
def test_missing_input_names_scheme_and_field(name, missing):
    inputs = _random_inputs(2, 8)
    setattr(inputs, missing, None)
    with pytest.raises(ValueError, match=f"{name}.*{missing}"):
        WEIGHTINGS[name](inputs, _ctx())


# ---------------------------------------------------------------- critic


# position 0: prompt, 1: last prompt token, 2..5: response, 6: padding
VALUES = [9.0, 0.5, 0.6, 0.4, 0.8, 0.3, 9.0]
MASK = [0, 0, 1, 1, 1, 1, 0]


def test_critic_hand_example_exp_and_clip():
    mask = torch.tensor([MASK, MASK], dtype=torch.bool)
    inputs = WeightingInputs(mask=mask, values=torch.tensor([VALUES, VALUES]), rewards=torch.tensor([1.0, 0.0]))
    cfg = WeightingConfig(beta=0.5, min_weight=0.3, max_weight=2.5, whiten=False, critic_credit="terminal_reward")
    ctx = WeightingContext(cfg=cfg, gamma=1.0, lam=1.0)
    res = critic(inputs, ctx)
    # gamma = lam = 1: A_t = R - V_{t-1}, with V_1..V_4 = 0.5, 0.6, 0.4, 0.8
    # beta = 0.5, clip to [0.3, 2.5]:
    #   R=1: A = 0.5, 0.4, 0.6, 0.2     -> exp(A/0.5) = e^1.0 = 2.718 (clip 2.5), e^0.8 = 2.2255,
    #                                       e^1.2 = 3.320 (clip 2.5), e^0.4 = 1.4918
    #   R=0: A = -0.5, -0.6, -0.4, -0.8 -> e^-1 = 0.3679, e^-1.2 = 0.3012, e^-0.8 = 0.4493,
    #                                       e^-1.6 = 0.2019 (clip 0.3)
    e = math.exp
    want = torch.tensor(
        [[0, 0, 2.5, e(0.8), 2.5, e(0.4), 0], [0, 0, e(-1.0), e(-1.2), e(-0.8), 0.3, 0]], dtype=torch.float32
    )
    torch.testing.assert_close(res.weights, want)
    adv = torch.tensor([0.5, 0.4, 0.6, 0.2, -0.5, -0.6, -0.4, -0.8], dtype=torch.float64)
    # deltas (gamma = 1): R=1: 0.1, -0.2, 0.4, 0.2; R=0: 0.1, -0.2, 0.4, -0.8 -> mean 0/8 = 0
    torch.testing.assert_close(res.metrics["delta_mean"], torch.tensor(0.0))
    torch.testing.assert_close(res.metrics["advantage_mean"], torch.tensor(-0.075))  # (1.7 - 2.3) / 8
    torch.testing.assert_close(res.metrics["advantage_std"], adv.std(unbiased=False).float())
    torch.testing.assert_close(res.metrics["fraction_clipped"], torch.tensor(3 / 8))  # 2.5, 2.5, 0.3


def test_critic_whitening_updates_stats_only_in_training():
    inputs = _random_inputs(4, 30)
    stats = RunningMoments()
    ctx = WeightingContext(cfg=WeightingConfig(), stats=stats, training=False)
    w_eval_fresh = critic(inputs, ctx).weights
    assert stats.state_dict() == {"mean": 0.0, "var": 1.0, "count": 0}  # validation does not change statistics
    ctx.training = True
    w_train = critic(inputs, ctx).weights
    assert stats.count == 1
    # first update = this batch's statistics, which is also what an un-updated eval whitens with
    torch.testing.assert_close(w_train, w_eval_fresh)
    before = stats.state_dict()
    ctx.training = False
    critic(_random_inputs(4, 30, seed=1), ctx)
    assert stats.state_dict() == before


def test_critic_without_stats_whitens_per_batch():
    inputs = _random_inputs(4, 30)
    cfg = WeightingConfig(beta=1.0, min_weight=0.0, max_weight=1e9)
    w = critic(inputs, WeightingContext(cfg=cfg, stats=None)).weights
    log_w = torch.log(w[inputs.mask].double())  # = whitened advantage: mean 0, std 1
    assert abs(float(log_w.mean())) < 1e-5 and abs(float(log_w.std(unbiased=False)) - 1) < 1e-5


# ---------------------------------------------------------------- whitening


def test_running_moments_warmup_average_then_ema():
    rm = RunningMoments(momentum=0.1, warmup_steps=2)
    x = torch.tensor([[1.0, 3.0, 99.0]])
    m = torch.tensor([[True, True, False]])
    # before any update: the batch's own mean 2, std 1 -> [-1, 1, 0]
    torch.testing.assert_close(rm.whiten(x, m), torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-6, rtol=0)
    rm.update(x, m)  # n=1, alpha=1: mean 2, var 1
    assert (rm.mean, rm.var, rm.count) == (2.0, 1.0, 1)
    rm.update(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool))  # no tokens: skipped
    assert rm.count == 1
    rm.update(torch.full((1, 4), 5.0), torch.ones(1, 4))  # n=2, alpha=1/2, batch (5, 0): mean 3.5, var 0.5
    assert rm.mean == pytest.approx(3.5) and rm.var == pytest.approx(0.5)
    rm.update(torch.tensor([[0.0, 2.0]]), torch.ones(1, 2))  # n=3 > warmup, alpha=0.1, batch (1, 1)
    assert rm.mean == pytest.approx(0.9 * 3.5 + 0.1 * 1.0)  # 3.25 (a 1/3 average would give 2.667)
    assert rm.var == pytest.approx(0.9 * 0.5 + 0.1 * 1.0)  # 0.55
    y = rm.whiten(torch.tensor([[3.25 + math.sqrt(0.55), 7.0]]), torch.tensor([[True, False]]))
    torch.testing.assert_close(y, torch.tensor([[1.0, 0.0]]))


def test_running_moments_state_dict_round_trip():
    rm = RunningMoments(momentum=0.2, warmup_steps=1)
    for s in range(3):
        rm.update(torch.randn(3, 5, generator=torch.Generator().manual_seed(s)), torch.ones(3, 5))
    other = RunningMoments(momentum=0.2, warmup_steps=1)
    other.load_state_dict(rm.state_dict())
    assert other.state_dict() == rm.state_dict()
    assert all(isinstance(v, (int, float)) for v in rm.state_dict().values())
    x = torch.randn(2, 4)
    torch.testing.assert_close(other.whiten(x, torch.ones(2, 4)), rm.whiten(x, torch.ones(2, 4)))
    # a resumed update continues the EMA exactly like the original
    new = torch.randn(2, 4)
    rm.update(new, torch.ones(2, 4))
    other.update(new, torch.ones(2, 4))
    assert other.state_dict() == rm.state_dict()


# ---------------------------------------------------------------- rho1


def test_rho1_equal_ce_gives_zero_excess():
    inputs = _random_inputs(3, 20)
    inputs.reference_ce = inputs.policy_ce.clone()
    for mode in ("signed", "absolute"):
        soft = rho1(inputs, _ctx(rho1_selection="soft", rho1_mode=mode))
        assert float(soft.metrics["excess_mean"]) == 0.0
        torch.testing.assert_close(soft.weights, inputs.mask.float())  # softmax of zeros: all 1


def test_rho1_topk_keeps_exact_count_and_the_right_tokens():
    # 10 response tokens with excess 0..9 shuffled over two rows; ceil(0.7 * 10) = 7 kept
    mask = _mask([(1, 5), (0, 5)], 7)
    excess = torch.zeros(2, 7)
    excess[mask] = torch.tensor([3.0, 9.0, 0.0, 5.0, 1.0, 8.0, 2.0, 6.0, 4.0, 7.0])
    excess[~mask] = 100.0  # off-mask garbage must never be selected
    inputs = WeightingInputs(mask=mask, policy_ce=excess + 1.0, reference_ce=torch.ones(2, 7))
    res = rho1(inputs, _ctx(rho1_selection="topk", rho1_k_percent=0.7))
    assert int(res.weights.sum()) == 7
    assert set(res.weights.unique().tolist()) == {0.0, 1.0}
    kept = excess[res.weights.bool()]
    assert sorted(kept.tolist()) == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    torch.testing.assert_close(res.metrics["selection_ratio"], torch.tensor(0.7))
    # ceil(0.25 * 10) = 3: 7, 8, 9
    res = rho1(inputs, _ctx(rho1_selection="topk", rho1_k_percent=0.25))
    assert sorted(excess[res.weights.bool()].tolist()) == [7.0, 8.0, 9.0]
    # absolute mode ranks |excess|: the token with excess 0 now gets -10, and |-10| beats 9
    inputs.policy_ce = torch.where(excess == 0.0, torch.tensor(-9.0), inputs.policy_ce)
    res = rho1(inputs, _ctx(rho1_selection="topk", rho1_k_percent=0.1, rho1_mode="absolute"))
    assert int(res.weights.sum()) == 1 and float(excess[res.weights.bool()]) == 0.0


def test_rho1_topk_count_is_robust_to_float_noise():
    # 0.07 * 100 = 7.000000000000001 in floating point: a bare ceil would keep 8 tokens
    inputs = _random_inputs(1, 100)
    inputs.mask[:] = True
    res = rho1(inputs, _ctx(rho1_selection="topk", rho1_k_percent=0.07))
    assert int(res.weights.sum()) == 7


def test_rho1_soft_has_mean_one_and_follows_excess():
    inputs = _random_inputs(5, 30)
    res = rho1(inputs, _ctx(rho1_selection="soft", rho1_temperature=0.5))
    w = res.weights[inputs.mask]
    assert float(w.mean()) == pytest.approx(1.0, abs=1e-5)
    excess = (inputs.policy_ce - inputs.reference_ce)[inputs.mask]
    assert torch.equal(w.argsort(), excess.argsort())


# ---------------------------------------------------------------- controls


def test_shuffled_permutes_within_rows():
    inputs = _random_inputs(8, 50, seed=3)
    crit = critic(inputs, _ctx(seed=0, whiten=True)).weights
    res = shuffled(inputs, _ctx(seed=0, whiten=True))
    m = inputs.mask
    for b in range(m.shape[0]):
        torch.testing.assert_close(res.weights[b][m[b]].sort().values, crit[b][m[b]].sort().values)
    assert (res.weights[~m] == 0).all()
    assert not torch.equal(res.weights, crit)  # actually permuted
    again = shuffled(inputs, _ctx(seed=0, whiten=True)).weights
    assert torch.equal(res.weights, again)  # seeded


def test_random_matched_matches_critic_mean_and_std():
    inputs = _random_inputs(64, 256, seed=5)
    crit_ctx, rm_ctx = _ctx(seed=1), _ctx(seed=1)
    crit = critic(inputs, crit_ctx).weights[inputs.mask].double()
    res = random_matched(inputs, rm_ctx)
    w = res.weights[inputs.mask].double()
    assert rm_ctx.stats.state_dict() == crit_ctx.stats.state_dict()  # stats updated once, as critic
    assert abs(float(w.mean()) / float(crit.mean()) - 1) < 0.05
    assert abs(float(w.std(unbiased=False)) / float(crit.std(unbiased=False)) - 1) < 0.05
    torch.testing.assert_close(res.metrics["target_mean"], crit.mean().float())
    assert (res.weights[~inputs.mask] == 0).all()
    assert not torch.allclose(w, crit)


# ---------------------------------------------------------------- statistics


def test_weight_statistics_vs_numpy():
    weights = torch.tensor([[7.0, 1.0, 2.0, 3.0, 0.0], [0.0, 6.0, 0.5, 0.0, 0.0]])
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.bool)
    st = weight_statistics(weights, mask, min_weight=0.5, max_weight=6.0)
    w = np.array([1.0, 2.0, 3.0, 6.0, 0.5])
    # mean 12.5/5 = 2.5; Kish (12.5)^2 / (1+4+9+36+0.25) = 156.25 / 50.25 = 3.1095; one weight > 5
    want = {
        "mean": 2.5,
        "std": np.std(w),
        "p25": np.percentile(w, 25),
        "p50": 2.0,
        "p75": np.percentile(w, 75),
        "p95": np.percentile(w, 95),
        "max": 6.0,
        "nan_weights": 0,
        "extreme_weights": 1,
        "effective_tokens": 156.25 / 50.25,
        "effective_token_fraction": 156.25 / 50.25 / 5,
        "n_tokens": 5,
        "fraction_at_min": 0.2,
        "fraction_at_max": 0.2,
        # tokens-to-end (2, 1, 0, 1, 0); average ranks w (2, 3, 4, 5, 1), d (5, 3.5, 1.5, 3.5, 1.5):
        # centred products sum to 0.5, squares to 10 and 9
        "corr_distance_to_end": 0.5 / math.sqrt(90),
    }
    assert set(st) == set(want)
    for k, v in want.items():
        assert st[k].dtype == torch.float32 and st[k].dim() == 0
        assert float(st[k]) == pytest.approx(float(v), rel=1e-6), k


def test_weight_statistics_nonfinite_and_empty():
    st = weight_statistics(torch.tensor([[1.0, float("nan"), float("inf"), 3.0]]), torch.ones(1, 4, dtype=torch.bool))
    assert float(st["nan_weights"]) == 2 and float(st["n_tokens"]) == 4 and float(st["mean"]) == 2.0
    empty = weight_statistics(torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    assert math.isnan(float(empty["mean"])) and math.isnan(float(empty["p95"]))
    assert float(empty["n_tokens"]) == 0 and float(empty["nan_weights"]) == 0 and float(empty["extreme_weights"]) == 0
