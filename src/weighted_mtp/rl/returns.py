"""Masked sequence reductions and TD(lambda) return targets for the critic.

Conventions: tensors are ``[B, S]`` over token positions; ``mask`` ``[B, S]`` (bool or 0/1) marks
the response tokens, one contiguous span per row (prompt before, padding after), possibly empty.
``values`` ``[B, S]`` hold V_t, the value of the state after reading token t.

Why a blocked matmul for the reverse cumsum y_t = sum_{j>=t} c^(j-t) x_j: a sequential scan is a
Python loop over tokens, and the cumsum(x / c^j) * c^t trick under/overflows (c^-j) on long
sequences. A full ``[S, S]`` discount matrix is exact but O(S^2) (S = 2048 -> 32 MiB, 4M
multiply-adds per row). Instead S is cut into blocks of L tokens: within a block the sum is an
``[L, L]`` matmul, and each block's total is carried backwards with an ``[nb, nb]`` matmul over the
nb = S / L block totals: y_t = local_t + c^(L - i) * Y_next, where i is t's offset in its block
and Y_next the full sum from the start of the next block. Cost O(S * L + S^2 / L^2) per row. All
exponents are non-negative (c^0 = 1, so c = 0 gives the identity and c = 1 a plain reverse
cumsum) and tiny powers underflow harmlessly to 0, so it is exact in float64 for every c in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

_BLOCK = 64  # tokens per block: [64, 64] matmuls are cheap and leave nb = S / 64 block totals


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


def _discount_matrix(n: int, c: float, step: int, device: torch.device) -> Tensor:
    """M[j, t] = c^(step * (j - t)) for j >= t, else 0: ``[n, n]`` float64, exponents >= 0.

    Laid out for right-multiplication, y = x @ M, so the matmul reads a contiguous matrix (with a
    transposed view, 2-thread CPU matmuls were measured far slower and noisier on a loaded box).
    """
    idx = torch.arange(n, device=device)
    lag = idx[:, None] - idx[None, :]  # lag[j, t] = j - t
    base = torch.tensor(float(c), dtype=torch.float64, device=device)
    return torch.pow(base, (step * lag.clamp(min=0)).to(torch.float64)) * (lag >= 0)


def discounted_reverse_cumsum(x: Tensor, mask: Tensor, c: float) -> Tensor:
    """y_t = sum_{j >= t, j in response} c^(j-t) * x_j for response t; 0 elsewhere.

    x, mask: ``[B, S]``; returns ``[B, S]`` in x's dtype. Also the GAE sum
    A_t = sum_l (gamma*lam)^l delta_{t+l} with ``c = gamma * lam``. Because the response is one
    contiguous span, zeroing x outside the mask confines the sum to the span. Computed in float64
    with blocks of ``_BLOCK`` tokens (see module docstring). Leading dims other than ``B`` work
    too. Differentiable w.r.t. ``x``.
    """
    _check_unit("c", c)
    m = mask.bool().expand_as(x)
    S = x.shape[-1]
    B = x.numel() // S if S else 0
    L = max(1, min(_BLOCK, S))
    nb = -(-S // L)  # ceil(S / L)
    zero = torch.zeros((), dtype=torch.float64, device=x.device)
    xs = torch.where(m, x.to(torch.float64), zero)
    xs = torch.nn.functional.pad(xs.reshape(B, S), (0, nb * L - S)).view(B, nb, L)  # zero padding adds nothing
    local = xs @ _discount_matrix(L, c, 1, x.device)  # [B, nb, L]: sum to the end of the block
    starts = local[:, :, 0] @ _discount_matrix(nb, c, L, x.device)  # [B, nb]: full sum at block k's start
    after = torch.nn.functional.pad(starts[:, 1:], (0, 1))  # [B, nb]: full sum from the next block on
    offs = torch.arange(L, device=x.device).to(torch.float64)
    carry = torch.pow(torch.tensor(float(c), dtype=torch.float64, device=x.device), L - offs)  # c^(L-i), L-i >= 1
    y = (local + carry * after[:, :, None]).reshape(B, nb * L)[:, :S].reshape(x.shape)
    return torch.where(m, y, zero).to(x.dtype)


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
