"""TD errors and GAE advantages vs hand-worked numbers and a literal per-token loop; the blocked
discounted reverse cumsum vs a naive loop across block boundaries."""

from __future__ import annotations

import pytest
import torch

from weighted_mtp.rl import discounted_reverse_cumsum
from weighted_mtp.weighting import gae_advantages, td_errors


def _mask(spans, S):
    m = torch.zeros(len(spans), S, dtype=torch.bool)
    for b, (t0, n) in enumerate(spans):
        m[b, t0 : t0 + n] = True
    return m


# ---------------------------------------------------------------- discounted_reverse_cumsum


def _naive_cumsum(x, spans, c):
    out = torch.zeros(x.shape, dtype=torch.float64)
    for b, (t0, n) in enumerate(spans):
        acc = 0.0
        for t in range(t0 + n - 1, t0 - 1, -1):
            acc = float(x[b, t]) + c * acc
            out[b, t] = acc
    return out


@pytest.mark.parametrize("S", [1, 63, 64, 65, 300])
@pytest.mark.parametrize("c", [0.0, 0.3, 0.95, 1.0])
def test_blocked_cumsum_matches_naive_loop(S, c):
    g = torch.Generator().manual_seed(S)
    spans = [(0, S), (0, 0), (S // 3, S - S // 3), (S // 4, max(S // 2, 1)), (S - 1, 1)]
    x = torch.randn(len(spans), S, generator=g, dtype=torch.float64) * 3  # garbage off-mask too
    got = discounted_reverse_cumsum(x, _mask(spans, S), c)
    want = _naive_cumsum(x, spans, c)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_blocked_cumsum_dtype_and_grad():
    S = 130  # three blocks of 64, the last one padded
    mask = _mask([(5, 120), (0, 130)], S)
    x = torch.randn(2, S, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: discounted_reverse_cumsum(x, mask, 0.9), (x,))
    y = discounted_reverse_cumsum(x.float().detach().requires_grad_(), mask, 0.9)
    assert y.dtype == torch.float32 and y.requires_grad


# ---------------------------------------------------------------- hand-worked example

# position: 0 = prompt, 1 = last prompt token, 2..5 = response, 6 = padding
VALUES = [9.0, 0.5, 0.6, 0.4, 0.8, 0.3, 9.0]
MASK = [0, 0, 1, 1, 1, 1, 0]


def test_hand_worked_four_tokens():
    values = torch.tensor([VALUES, VALUES])
    mask = torch.tensor([MASK, MASK], dtype=torch.bool)
    rewards = torch.tensor([1.0, 0.0])
    # gamma = 0.9: delta_t = 0.9 * V_t - V_{t-1}, last token delta_5 = R - V_4
    #   delta_2 = 0.9*0.6 - 0.5 =  0.04    (V_{t0-1} = V_1 = 0.5, the last prompt token)
    #   delta_3 = 0.9*0.4 - 0.6 = -0.24
    #   delta_4 = 0.9*0.8 - 0.4 =  0.32
    #   delta_5 = R - 0.8       =  0.2 (R=1) / -0.8 (R=0)    (V_5 = 0.3 is never used)
    want_delta = torch.tensor([[0, 0, 0.04, -0.24, 0.32, 0.2, 0], [0, 0, 0.04, -0.24, 0.32, -0.8, 0]])
    torch.testing.assert_close(td_errors(values, rewards, mask, 0.9), want_delta)
    # lam = 0.5, c = gamma * lam = 0.45: A_t = delta_t + 0.45 * A_{t+1}
    #   R=1: A_5 = 0.2;  A_4 = 0.32 + 0.45*0.2 = 0.41;  A_3 = -0.24 + 0.45*0.41 = -0.0555;
    #        A_2 = 0.04 + 0.45*(-0.0555) = 0.015025
    #   R=0: A_5 = -0.8; A_4 = 0.32 - 0.36 = -0.04;     A_3 = -0.24 - 0.018 = -0.258;
    #        A_2 = 0.04 + 0.45*(-0.258) = -0.0761
    want = torch.tensor([[0, 0, 0.015025, -0.0555, 0.41, 0.2, 0], [0, 0, -0.0761, -0.258, -0.04, -0.8, 0]])
    torch.testing.assert_close(gae_advantages(values, rewards, mask, 0.9, 0.5), want)


def test_gamma_lambda_one_telescopes_to_reward_minus_previous_value():
    values = torch.tensor([VALUES, VALUES])
    mask = torch.tensor([MASK, MASK], dtype=torch.bool)
    got = gae_advantages(values, torch.tensor([1.0, 0.0]), mask, 1.0, 1.0)
    # A_t = R - V_{t-1}: V_1..V_4 = 0.5, 0.6, 0.4, 0.8
    want = torch.tensor([[0, 0, 0.5, 0.4, 0.6, 0.2, 0], [0, 0, -0.5, -0.6, -0.4, -0.8, 0]])
    torch.testing.assert_close(got, want)


def test_response_starting_at_position_zero_uses_zero_previous_value():
    values = torch.tensor([[0.3, 0.7, 5.0]])
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    # delta_0 = 1.0*0.3 - 0 = 0.3; delta_1 = R - V_0 = 1 - 0.3 = 0.7
    torch.testing.assert_close(td_errors(values, torch.tensor([1.0]), mask, 1.0), torch.tensor([[0.3, 0.7, 0.0]]))


# ---------------------------------------------------------------- vs a literal loop


def _naive_gae(values, rewards, spans, gamma, lam):
    """Literal formulas, one token at a time, backwards from the end of each span."""
    adv = torch.zeros(values.shape, dtype=torch.float64)
    delta = torch.zeros(values.shape, dtype=torch.float64)
    for b, (t0, n) in enumerate(spans):
        T = t0 + n - 1
        a = 0.0
        for t in range(T, t0 - 1, -1):
            v_prev = float(values[b, t - 1]) if t > 0 else 0.0
            if t == T:
                d = float(rewards[b]) - v_prev
            else:
                d = gamma * float(values[b, t]) - v_prev
            a = d + gamma * lam * a
            delta[b, t], adv[b, t] = d, a
    return delta, adv


S = 80
SPANS = [(7, 50), (0, 0), (30, 50), (0, 17), (12, 1), (3, 77), (64, 10)]  # empty, ends at S-1, starts at 0
GL = [(1.0, 1.0), (1.0, 0.95), (0.99, 0.95), (0.9, 0.5), (1.0, 0.0), (0.0, 0.7), (0.5, 1.0)]


@pytest.mark.parametrize("gamma,lam", GL)
def test_matches_literal_loop(gamma, lam):
    g = torch.Generator().manual_seed(int(gamma * 100 + lam * 10))
    values = torch.randn(len(SPANS), S, generator=g)  # garbage in prompt/padding too
    rewards = torch.randint(0, 2, (len(SPANS),), generator=g).float()
    mask = _mask(SPANS, S)
    want_delta, want_adv = _naive_gae(values, rewards, SPANS, gamma, lam)
    got_delta = td_errors(values, rewards, mask, gamma)
    got_adv = gae_advantages(values, rewards, mask, gamma, lam)
    assert got_delta.dtype == got_adv.dtype == torch.float32
    torch.testing.assert_close(got_delta.double(), want_delta, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_adv.double(), want_adv, atol=1e-5, rtol=1e-5)
    assert (got_adv[~mask] == 0).all() and (got_delta[~mask] == 0).all()


def test_outputs_never_require_grad():
    values = torch.randn(2, 6, requires_grad=True)
    rewards = torch.tensor([1.0, 0.0], requires_grad=True)
    mask = _mask([(1, 4), (0, 6)], 6)
    for out in (td_errors(values, rewards, mask, 0.9), gae_advantages(values, rewards, mask, 0.9, 0.95)):
        assert not out.requires_grad and out.grad_fn is None


def test_bad_inputs():
    v, m = torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"rewards \(3,\)"):
        gae_advantages(v, torch.zeros(3), m, 1.0, 0.5)
    with pytest.raises(ValueError, match=r"mask \(2, 4\)"):
        td_errors(v, torch.zeros(2), torch.ones(2, 4, dtype=torch.bool), 1.0)
    with pytest.raises(ValueError, match="lam"):
        gae_advantages(v, torch.zeros(2), m, 1.0, 1.5)
    with pytest.raises(ValueError, match="gamma"):
        td_errors(v, torch.zeros(2), m, -0.1)
