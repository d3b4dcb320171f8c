"""Losses for training the value critic: pairwise (Bradley-Terry) and pointwise (BCE / MSE).

Pairwise: the critic only has to rank a correct response above an incorrect one for the same
problem, which is what token weighting needs, and is insensitive to the base rate of correctness.
Pointwise: regress each response token's value onto a target (is_correct, or lambda returns).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

POINTWISE_KINDS = ("bce", "mse")


def _check_pair(mean_pos: Tensor, mean_neg: Tensor) -> None:
    if mean_pos.dim() != 1 or mean_pos.shape != mean_neg.shape:
        shapes = f"{tuple(mean_pos.shape)} and {tuple(mean_neg.shape)}"
        raise ValueError(f"mean_pos and mean_neg must both be [B], got {shapes}")


def bradley_terry_loss(mean_pos: Tensor, mean_neg: Tensor, margin: float = 0.0) -> Tensor:
    """L = mean_b -log sigmoid(s+_b - s-_b - margin), via ``F.logsigmoid`` (no overflow).

    mean_pos, mean_neg: ``[B]`` sequence scores (e.g. ``sequence_mean`` of token values) of the
    preferred and rejected response of each pair. Returns a differentiable scalar. A positive
    ``margin`` keeps pushing until the gap exceeds it.
    """
    _check_pair(mean_pos, mean_neg)
    return -F.logsigmoid(mean_pos - mean_neg - margin).mean()


def pairwise_stats(mean_pos: Tensor, mean_neg: Tensor) -> dict[str, Tensor]:
    """Detached 0-d metrics for ``[B]`` pair scores.

    pairwise_accuracy = mean_b([s+ > s-] + 0.5 [s+ == s-]) (ties are coin flips);
    mean_pos, mean_neg = batch means; margin = mean(s+) - mean(s-).
    """
    _check_pair(mean_pos, mean_neg)
    p, n = mean_pos.detach().float(), mean_neg.detach().float()
    acc = ((p > n).float() + 0.5 * (p == n).float()).mean()
    return {"pairwise_accuracy": acc, "mean_pos": p.mean(), "mean_neg": n.mean(), "margin": p.mean() - n.mean()}


def pointwise_loss(values: Tensor, mask: Tensor, target: Tensor, kind: str) -> Tensor:
    """Token loss averaged per sequence over response tokens, then over non-empty sequences.

    values, mask: ``[B, S]``; target: ``[B]`` (e.g. is_correct as 0/1, broadcast over tokens) or
    ``[B, S]`` (e.g. lambda returns). kind "bce": l_t = BCEWithLogits(V_t, y_t) (values are
    logits, y in [0, 1]); "mse": l_t = (V_t - y_t)^2. Loss = mean_{b non-empty} (sum_t m l / sum_t m)
    so a long response weighs as much as a short one. Returns a differentiable scalar; 0 (still
    attached to the graph) if no row has a response token.
    """
    if kind not in POINTWISE_KINDS:
        raise ValueError(f"unknown pointwise loss kind {kind!r}; valid: {', '.join(POINTWISE_KINDS)}")
    if values.dim() != 2 or mask.shape != values.shape:
        raise ValueError(f"values and mask must both be [B, S], got {tuple(values.shape)} and {tuple(mask.shape)}")
    if target.dim() == 1 and target.shape[0] == values.shape[0]:
        target = target[:, None].expand_as(values)
    elif target.shape != values.shape:
        raise ValueError(f"target must be [B] or [B, S], got {tuple(target.shape)}")
    m = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    v = torch.where(m, values, zero)  # padding may hold garbage; keep it out of the loss and grad
    y = torch.where(m, target.to(values.dtype), zero)
    if kind == "bce":
        tok = F.binary_cross_entropy_with_logits(v, y, reduction="none")
    else:
        tok = (v - y) ** 2
    count = m.sum(-1)
    per_seq = torch.where(m, tok, zero).sum(-1) / count.clamp(min=1).to(tok.dtype)  # [B]
    rows = (count > 0).to(tok.dtype)  # no host sync: empty batches give 0 via the clamp
    return (per_seq * rows).sum() / rows.sum().clamp(min=1)
