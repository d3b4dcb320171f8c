"""Masked sequence reductions and TD(lambda) return targets for the critic.

Conventions: tensors are ``[B, S]`` over token positions; ``mask`` ``[B, S]`` (bool or 0/1) marks
the response tokens, one contiguous span per row (prompt before, padding after), possibly empty.
``values`` ``[B, S]`` hold V_t, the value of the state after reading token t.

Why a matrix for the reverse cumsum: y_t = sum_{j>=t} c^(j-t) x_j is computed as ``x @ D^T`` with
the ``[S, S]`` upper-triangular discount matrix D[t, j] = c^(j-t) (j >= t), in float64. That is
exact for every c in [0, 1] (c = 0 gives the identity since 0**0 = 1; c = 1 a plain reverse
cumsum), fully vectorised, and avoids the cumsum(x / c^j) * c^t trick, whose c^-j under/overflows
for long sequences. Cost is O(S^2) memory: S = 2048 -> 4M float64 entries (32 MiB), fine.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_unit(name: str, x: float) -> None:
    if not 0.0 <= float(x) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {x}")


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over positions where ``mask`` is set: sum(x * m) / max(sum(m), 1).

    x, mask: same shape (e.g. ``[B, S]``). ``dim=None`` reduces everything to a scalar, otherwise
    that dim is reduced. Empty selections give 0 (not nan) so padded/empty rows are harmless.
    Positions outside the mask are replaced (not multiplied) so nan/inf there cannot leak.
    Differentiable w.r.t. ``x``.
    """
    m = mask.bool()
    xs = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
    if dim is None:
        return xs.sum() / m.sum().clamp(min=1).to(x.dtype)
    return xs.sum(dim) / m.sum(dim).clamp(min=1).to(x.dtype)


def sequence_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Per-sequence mean over response tokens: ``[B, S] -> [B]``, 0 for rows without any.

    This is the sequence score the pairwise (Bradley-Terry) critic loss compares.
    """
    return masked_mean(values, mask, dim=-1)


def discounted_reverse_cumsum(x: Tensor, mask: Tensor, c: float) -> Tensor:
    """y_t = sum_{j >= t, j in response} c^(j-t) * x_j for response t; 0 elsewhere.

    x, mask: ``[B, S]``; returns ``[B, S]`` in x's dtype. Also the GAE sum
    A_t = sum_l (gamma*lam)^l delta_{t+l} with ``c = gamma * lam``. Because the response is one
    contiguous span, zeroing x outside the mask confines the sum to the span. Computed in float64
    via the ``[S, S]`` discount matrix (see module docstring). Differentiable w.r.t. ``x``.
    """
    _check_unit("c", c)
    m = mask.bool()
    S = x.shape[-1]
    xs = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)).to(torch.float64)
    idx = torch.arange(S, device=x.device)
    lag = idx[None, :] - idx[:, None]  # [S, S]: lag[t, j] = j - t
    base = torch.tensor(float(c), dtype=torch.float64, device=x.device)
    disc = torch.pow(base, lag.clamp(min=0).to(torch.float64)) * (lag >= 0)  # D[t, j]
    y = xs @ disc.T  # y[b, t] = sum_j D[t, j] x[b, j]
    return torch.where(m, y, torch.zeros((), dtype=y.dtype, device=y.device)).to(x.dtype)


def lambda_returns(values: Tensor, rewards: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """TD(lambda) targets G_t over each row's response span t0..T-1; 0 outside it, no grad.

    values, mask: ``[B, S]``. rewards: ``[B]`` (terminal reward R placed on the last response
    token) or ``[B, S]`` (per-token r_t; ignored outside the mask). Recursion:
        G_{T-1} = r_{T-1};   G_t = r_t + gamma * ((1 - lam) * V_{t+1} + lam * G_{t+1})  (t < T-1)
    Unrolled: G_t = sum_{j>=t} (gamma*lam)^(j-t) a_j with a_j = r_j + gamma*(1-lam)*V_{j+1}*[j+1 in
    response], i.e. a discounted reverse cumsum. lam = 1 gives Monte-Carlo returns, lam = 0 the
    one-step TD targets r_t + gamma*V_{t+1}. V is detached: targets are regression labels.
    Computed in float64, returned in values' dtype.
    """
    _check_unit("gamma", gamma)
    _check_unit("lam", lam)
    if values.dim() != 2 or mask.shape != values.shape:
        raise ValueError(f"values and mask must both be [B, S], got {tuple(values.shape)} and {tuple(mask.shape)}")
    with torch.no_grad():
        m = mask.bool()
        v = values.detach().to(torch.float64)
        nxt = torch.zeros_like(m)
        nxt[:, :-1] = m[:, 1:]  # nxt[b, t] = position t+1 is a response token
        v_next = torch.zeros_like(v)
        v_next[:, :-1] = v[:, 1:]
        if rewards.dim() == 1:
            if rewards.shape[0] != values.shape[0]:
                raise ValueError(f"rewards [B] must match batch {values.shape[0]}, got {tuple(rewards.shape)}")
            last = m & ~nxt  # the last response token of each row (none for empty rows)
            r = rewards.detach().to(torch.float64)[:, None] * last
        elif rewards.shape == values.shape:
            r = torch.where(m, rewards.detach().to(torch.float64), torch.zeros((), dtype=torch.float64))
        else:
            raise ValueError(f"rewards must be [B] or [B, S], got {tuple(rewards.shape)}")
        a = r + gamma * (1.0 - lam) * torch.where(m & nxt, v_next, torch.zeros_like(v_next))
        return discounted_reverse_cumsum(a, m, gamma * lam).to(values.dtype)
