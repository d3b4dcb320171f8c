"""Naive multi-token CE: the reference that tests and benchmarks compare the fused loss against.

Deliberately the obvious implementation (full ``[B, S, K, V]`` logits and ``F.cross_entropy``)
so that its correctness can be checked by reading it; never use it for training, it needs
several copies of the full logits (gigabytes at real vocabulary sizes).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from weighted_mtp.constants import IGNORE_INDEX
from weighted_mtp.losses.mtp_loss import MTPLossOutput, check_inputs


def naive_mtp_cross_entropy(
    head_hidden: Sequence[Tensor],
    unembed_weight: Tensor,
    labels: Tensor,
    weights: Tensor | None = None,
    *,
    unembed_bias: Tensor | None = None,
    normalization: str = "token_mean",
    chunk_size: int = 1024,  # accepted for signature parity, unused
    ignore_index: int = IGNORE_INDEX,
    head_scales: Sequence[float] | None = None,
) -> MTPLossOutput:
    """Same signature and semantics as :func:`weighted_mtp.losses.mtp_loss.mtp_cross_entropy`."""
    w_full = check_inputs(head_hidden, labels, weights, normalization, head_scales)
    K = len(head_hidden)
    B, S = labels.shape
    hidden = torch.stack(list(head_hidden), dim=2)  # [B, S, K, D]
    acc_dtype = torch.promote_types(hidden.dtype, torch.float32)
    logits = F.linear(hidden, unembed_weight, unembed_bias).to(acc_dtype)  # [B, S, K, V]

    # Align targets and weights with the predicting position: head k at t -> token t + k.
    targets = torch.full((B, S, K), ignore_index, dtype=torch.long, device=labels.device)
    tok_w = torch.zeros(B, S, K, dtype=acc_dtype, device=labels.device)
    for k in range(1, K + 1):
        targets[:, : S - k, k - 1] = labels[:, k:]
        tok_w[:, : S - k, k - 1] = w_full[:, k:, k - 1]
    ce = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index, reduction="none"
    ).view(B, S, K)
    valid = targets != ignore_index
    tok_w = tok_w * valid

    n_valid = valid.sum((0, 1))  # [K]
    numer = (tok_w * ce).sum((0, 1))
    denom = n_valid.to(acc_dtype) if normalization == "token_mean" else tok_w.sum((0, 1))
    safe = torch.where(denom != 0, denom, torch.ones_like(denom))  # no 0/0 in the backward
    head_loss = torch.where(denom != 0, numer / safe, torch.zeros_like(numer))
    active = n_valid > 0
    if head_scales is not None:
        active = active & (torch.tensor(list(head_scales), device=labels.device) > 0)
    if active.any() and head_scales is not None:
        loss = sum(float(head_scales[k]) * head_loss[k] for k in range(K) if active[k])
    elif active.any():
        loss = head_loss[active].mean()
    else:
        loss = sum(h.sum() for h in head_hidden) * 0.0 + unembed_weight.sum() * 0.0
        if unembed_bias is not None:
            loss = loss + unembed_bias.sum() * 0.0
        loss = loss.to(torch.promote_types(loss.dtype, torch.float32))

    nan = torch.tensor(float("nan"), device=labels.device)
    per_head_ce = torch.where(active, (ce * valid).sum((0, 1)) / n_valid.clamp(min=1), nan)
    per_head_loss = torch.where(active, head_loss.detach(), nan)
    return MTPLossOutput(loss, per_head_ce.detach().float(), n_valid.long(), per_head_loss.float())
