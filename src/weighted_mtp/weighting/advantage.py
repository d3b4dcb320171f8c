"""TD errors and GAE advantages of the response tokens, from the critic's values (and a terminal reward).

Conventions (as in ``weighted_mtp.rl.returns``): tensors are ``[B, S]``; ``values[b, t]`` is
V(s_t), the critic's value after reading token t; ``mask[b, t]`` marks the response target tokens,
one contiguous span t0..T per row (prompt before, padding after), possibly empty; ``rewards`` ``[B]``
is the terminal reward R (1 correct, 0 incorrect).

Two credits (`training.weighting.critic_credit`). Choosing target token t is the action taken in
state s_{t-1}, so its credit compares the state it leads to with the one it left.

- value_delta (default, seed 003's definition): delta_t = V(s_t) - V(s_{t-1}) on every response
  token, the last one included. Adding a constant to every value leaves every delta, hence every
  advantage and weight, unchanged. A pairwise (Bradley-Terry) critic is trained by a loss that is
  blind to such a constant, so only this form measures its credit.
- terminal_reward: delta_t = gamma V(s_t) - V(s_{t-1}), and the last token is credited with the
  reward instead (terminal value 0): delta_T = R - V(s_{T-1}). R is 0/1, so this is meaningful only
  when the values are probabilities of success on the same scale. With a critic of arbitrary level
  the term lambda^(T-t) (R - V(s_{T-1})) dominates and the weights ramp toward the end of the response.

The state before the first response token is the last prompt token's, V(s_{t0-1}) (a response
starting at position 0 has no previous state: value_delta gives it delta 0, terminal_reward uses
V = 0). GAE then sums A_t = sum_l (gamma*lam)^l delta_{t+l}.

Hand check: gamma = lam = 1 telescopes to A_t = R - V(s_{t-1}) (terminal_reward) and to
A_t = V(s_T) - V(s_{t-1}) (value_delta). Advantages are weights, not a graph: everything runs
detached under no_grad, in float64, and comes back float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from weighted_mtp.rl.returns import discounted_reverse_cumsum


def _check(values: Tensor, rewards: Tensor, mask: Tensor, **unit: float) -> None:
    if values.dim() != 2 or mask.shape != values.shape or rewards.shape != values.shape[:1]:
        raise ValueError(
            f"expected values [B, S], mask [B, S], rewards [B]; got values {tuple(values.shape)}, "
            f"mask {tuple(mask.shape)}, rewards {tuple(rewards.shape)}"
        )
    for name, x in unit.items():
        if not 0.0 <= float(x) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {x}")


CREDITS = ("value_delta", "terminal_reward")


def _value_deltas64(values: Tensor, mask: Tensor) -> Tensor:
    m = mask.bool()
    v = values.detach().to(torch.float64)
    delta = v[:, 1:] - v[:, :-1]  # V(s_t) - V(s_{t-1}) for t >= 1
    delta = torch.nn.functional.pad(delta, (1, 0))  # no previous state at position 0
    return torch.where(m, delta, torch.zeros((), dtype=torch.float64, device=v.device))


def _deltas64(values: Tensor, rewards: Tensor | None, mask: Tensor, gamma: float, credit: str) -> Tensor:
    if credit == "value_delta":
        return _value_deltas64(values, mask)
    if credit == "terminal_reward":
        if rewards is None:
            raise ValueError("critic_credit 'terminal_reward' needs rewards [B]")
        return _td_errors64(values, rewards, mask, gamma)
    raise ValueError(f"critic_credit must be one of {CREDITS}, got {credit!r}")


def _td_errors64(values: Tensor, rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    m = mask.bool()
    v = values.detach().to(torch.float64)
    v_prev = torch.nn.functional.pad(v[:, :-1], (1, 0))  # V(s_{t-1}); 0 before position 0
    nxt = torch.nn.functional.pad(m[:, 1:], (0, 1))  # position t+1 is a response token
    last = m & ~nxt  # the last response token of each row
    r = rewards.detach().to(torch.float64)[:, None].expand_as(v)
    delta = torch.where(last, r, gamma * v) - v_prev
    return torch.where(m, delta, torch.zeros((), dtype=torch.float64, device=v.device))


def td_errors(values: Tensor, rewards: Tensor, mask: Tensor, gamma: float,
              credit: str = "terminal_reward") -> Tensor:
    """Per-token credit delta_t of the response tokens (see the module docstring for ``credit``).

    terminal_reward: gamma * V(s_t) - V(s_{t-1}), and R - V(s_{T-1}) on the last response token T;
    value_delta: V(s_t) - V(s_{t-1}) everywhere (rewards and gamma unused).
    values, mask: ``[B, S]``; rewards: ``[B]``. Returns ``[B, S]`` float32, 0 outside the mask,
    never requiring grad. Raises ValueError on mismatched shapes or gamma outside [0, 1].
    """
    _check(values, rewards, mask, gamma=gamma)
    with torch.no_grad():
        return _deltas64(values, rewards, mask, gamma, credit).float()


def gae_advantages(values: Tensor, rewards: Tensor, mask: Tensor, gamma: float, lam: float,
                   credit: str = "terminal_reward") -> Tensor:
    """A_t = sum_l (gamma*lam)^l delta_{t+l} over each row's response span; 0 elsewhere.

    values, mask: ``[B, S]``; rewards: ``[B]``. With terminal_reward, gamma = lam = 1 gives
    A_t = R - V(s_{t-1}); with value_delta, A_t = V(s_T) - V(s_{t-1}). lam = 0 gives the one-step
    delta. Returns float32 without grad; the deltas stay float64 through the discounted sum.
    Raises ValueError on mismatched shapes or gamma/lam outside [0, 1].
    """
    _check(values, rewards, mask, gamma=gamma, lam=lam)
    with torch.no_grad():
        delta = _deltas64(values, rewards, mask, gamma, credit)
        return discounted_reverse_cumsum(delta, mask, gamma * lam).float()
