"""TD(lambda) targets and masked reductions vs hand-worked numbers and a naive reverse loop."""

from __future__ import annotations

import pytest
import torch

from weighted_mtp.rl import discounted_reverse_cumsum, lambda_returns, masked_mean, sequence_mean

# (start, length) of each row's response span, S = 12: empty row, span ending at S-1, full row
SPANS = [(3, 5), (0, 0), (7, 5), (0, 12)]
S = 12


def _mask(spans=SPANS, S=S):
    m = torch.zeros(len(spans), S, dtype=torch.bool)
    for b, (t0, n) in enumerate(spans):
        m[b, t0 : t0 + n] = True
    return m


def _naive(values, rewards, spans, gamma, lam):
    """Literal recursion, one token at a time, from the end of each span."""
    out = torch.zeros(values.shape, dtype=torch.float64)
    for b, (t0, n) in enumerate(spans):
        if n == 0:
            continue
        T = t0 + n
        r = [0.0] * values.shape[1]
        if rewards.dim() == 1:
            r[T - 1] = float(rewards[b])
        else:
            r = [float(x) for x in rewards[b]]
        g = r[T - 1]
        out[b, T - 1] = g
        for t in range(T - 2, t0 - 1, -1):
            g = r[t] + gamma * ((1 - lam) * float(values[b, t + 1]) + lam * g)
            out[b, t] = g
    return out


GL = [(1.0, 0.5), (0.9, 0.95), (1.0, 1.0), (0.9, 1.0), (1.0, 0.0), (0.9, 0.0), (0.0, 0.7), (0.99, 0.3)]


@pytest.mark.parametrize("gamma,lam", GL)
@pytest.mark.parametrize("per_token", [False, True])
def test_matches_naive_loop(gamma, lam, per_token):
    g = torch.Generator().manual_seed(0)
    values = torch.randn(4, S, generator=g) * 3  # garbage in prompt/padding too
    mask = _mask()
    if per_token:
        rewards = torch.randn(4, S, generator=g) * mask
    else:
        rewards = torch.tensor([1.0, -2.0, 0.5, 3.0])
    got = lambda_returns(values, rewards, mask, gamma, lam)
    want = _naive(values, rewards, SPANS, gamma, lam)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-6)
    assert (got[~mask] == 0).all()


def test_hand_worked_three_tokens():
    values = torch.tensor([[9.0, 0.2, 0.5, 0.7, 9.0]])  # prompt token, 3 response tokens, padding
    mask = torch.tensor([[0, 1, 1, 1, 0]])
    got = lambda_returns(values, torch.tensor([1.0]), mask, gamma=1.0, lam=0.5)
    # G_3 = 1; G_2 = 0.5*0.7 + 0.5*1 = 0.85; G_1 = 0.5*0.5 + 0.5*0.85 = 0.675
    torch.testing.assert_close(got, torch.tensor([[0.0, 0.675, 0.85, 1.0, 0.0]]))


def test_lambda_one_is_monte_carlo_and_lambda_zero_is_one_step_td():
    values = torch.tensor([[0.2, 0.5, 0.7, 0.1], [0.3, 0.4, 0.6, 0.8]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    R = torch.tensor([1.0, -1.0])
    mc = lambda_returns(values, R, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(mc, torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, -1.0, -1.0, -1.0]]))
    td = lambda_returns(values, R, mask, gamma=0.9, lam=0.0)
    want = torch.tensor([[0.9 * 0.5, 0.9 * 0.7, 1.0, 0.0], [0.0, 0.9 * 0.6, 0.9 * 0.8, -1.0]])
    torch.testing.assert_close(td, want)
    mc_disc = lambda_returns(values, R, mask, gamma=0.5, lam=1.0)  # gamma^(T-1-t) R
    torch.testing.assert_close(mc_disc, torch.tensor([[0.25, 0.5, 1.0, 0.0], [0.0, -0.25, -0.5, -1.0]]))


def test_no_grad_and_dtype():
    values = torch.randn(2, 5, requires_grad=True)
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    out = lambda_returns(values, torch.tensor([1.0, 0.0]), mask, 0.95, 0.9)
    assert not out.requires_grad and out.dtype == values.dtype


def test_per_token_rewards_hand():
    values = torch.tensor([[0.0, 2.0, 4.0]])
    mask = torch.ones(1, 3)
    r = torch.tensor([[1.0, 0.0, 3.0]])
    # gamma=0.5, lam=0.5: G2 = 3; G1 = 0 + 0.5*(0.5*4 + 0.5*3) = 1.75; G0 = 1 + 0.5*(0.5*2 + 0.5*1.75) = 1.9375
    out = lambda_returns(values, r, mask, 0.5, 0.5)
    torch.testing.assert_close(out, torch.tensor([[1.9375, 1.75, 3.0]]))


def test_bad_inputs():
    v, m = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError):
        lambda_returns(v, torch.zeros(3), m, 1.0, 0.5)
    with pytest.raises(ValueError):
        lambda_returns(v, torch.zeros(2), m, 1.5, 0.5)


def test_discounted_reverse_cumsum_gae_form():
    x = torch.tensor([[5.0, 1.0, 2.0, 3.0, 7.0]])
    mask = torch.tensor([[0, 1, 1, 1, 0]])
    out = discounted_reverse_cumsum(x, mask, 0.5)
    torch.testing.assert_close(out, torch.tensor([[0.0, 1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0, 0.0]]))
    torch.testing.assert_close(discounted_reverse_cumsum(x, mask, 0.0), torch.tensor([[0.0, 1.0, 2.0, 3.0, 0.0]]))
    torch.testing.assert_close(discounted_reverse_cumsum(x, mask, 1.0), torch.tensor([[0.0, 6.0, 5.0, 3.0, 0.0]]))


def test_discounted_reverse_cumsum_long_no_underflow():
    S = 2048
    x = torch.ones(1, S, dtype=torch.float64)
    out = discounted_reverse_cumsum(x, torch.ones(1, S), 0.9)
    want = (1 - 0.9 ** torch.arange(S, 0, -1, dtype=torch.float64)) / 0.1  # geometric series
    torch.testing.assert_close(out[0], want)


def test_masked_mean_and_sequence_mean():
    v = torch.tensor([[1.0, 2.0, 3.0, float("nan")], [5.0, 6.0, 7.0, 8.0]], requires_grad=True)
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0]])
    sm = sequence_mean(v, mask)
    torch.testing.assert_close(sm, torch.tensor([2.5, 0.0]))
    torch.testing.assert_close(masked_mean(v, mask), torch.tensor(2.5))
    sm.sum().backward()
    torch.testing.assert_close(v.grad, torch.tensor([[0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]]))
