"""Weighted multi-token-prediction cross-entropy: the one loss every objective feeds.

Why it looks like this: objectives (plain MTP, critic-weighted, Rho-1, StepER, ...) differ only
in the per-token weights they produce, so they all hand ``weights`` to this function instead of
writing their own loss. It gathers only the rows that have a target (prompt and padding cost
nothing) and runs a single chunked, fused unembedding + CE pass over all heads, so the full
``[B, S, K, V]`` logits never exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from weighted_mtp.constants import IGNORE_INDEX
from weighted_mtp.losses.fused_linear_ce import fused_linear_cross_entropy

NORMALIZATIONS = ("token_mean", "weight_mean")


@dataclass
class MTPLossOutput:
    loss: Tensor  # scalar, differentiable
    per_head_ce: Tensor  # [K] fp32 detached: unweighted mean CE over each head's valid targets (nan if none)
    per_head_tokens: Tensor  # [K] int64: number of valid targets of each head
    per_head_loss: Tensor  # [K] fp32 detached: L_k, each head's weighted, normalised loss (nan if no targets)


def check_inputs(
    head_hidden: Sequence[Tensor], labels: Tensor, weights: Tensor | None, normalization: str,
    head_scales: Sequence[float] | None = None,
) -> Tensor:
    """Validate shapes; return weights as ``[B, S, K]`` (a broadcast view, no copy, when 2-D).

    Shared with the naive reference so both raise identical errors.
    """
    if head_scales is not None:
        if len(head_scales) != len(head_hidden):
            raise ValueError(f"head_scales has {len(head_scales)} values for {len(head_hidden)} heads")
        if any(not s >= 0 for s in head_scales):  # also catches nan
            raise ValueError(f"head_scales must be >= 0, got {list(head_scales)}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; valid: {', '.join(NORMALIZATIONS)}")
    if len(head_hidden) == 0:
        raise ValueError("head_hidden is empty: need one [B, S, D] hidden state per head")
    if labels.dim() != 2:
        raise ValueError(f"labels must be [B, S], got shape {tuple(labels.shape)}")
    B, S = labels.shape
    K = len(head_hidden)
    for k, h in enumerate(head_hidden, start=1):
        if h.dim() != 3 or tuple(h.shape[:2]) != (B, S):
            raise ValueError(f"head_hidden[{k - 1}] (head {k}) must be [B, S, D] = [{B}, {S}, D], got {tuple(h.shape)}")
    if weights is None:
        return torch.ones(1, 1, 1, device=labels.device).expand(B, S, K)
    if weights.requires_grad:
        # Weights are data (critic outputs, token scores), never parameters: a weight that
        # requires grad almost always means a critic forgot to detach, so fail loudly.
        raise ValueError("weights must not require grad: detach them (weights are data, not parameters)")
    if tuple(weights.shape) == (B, S):
        return weights.unsqueeze(-1).expand(B, S, K)
    if tuple(weights.shape) == (B, S, K):
        return weights
    raise ValueError(
        f"weights must have shape [B, S] = [{B}, {S}] or [B, S, K] = [{B}, {S}, {K}], got {tuple(weights.shape)}"
    )


def mtp_cross_entropy(
    head_hidden: Sequence[Tensor],
    unembed_weight: Tensor,
    labels: Tensor,
    weights: Tensor | None = None,
    *,
    unembed_bias: Tensor | None = None,
    normalization: str = "token_mean",
    chunk_size: int = 1024,
    ignore_index: int = IGNORE_INDEX,
    head_scales: Sequence[float] | None = None,
) -> MTPLossOutput:
    """Weighted cross-entropy of K prediction heads sharing one unembedding.

    Args:
        head_hidden: K tensors ``[B, S, D]``; ``head_hidden[k-1]`` is head k's final-normed
            hidden state (k = 1..K).
        unembed_weight: ``[V, D]`` shared unembedding (may be frozen).
        labels: ``[B, S]`` input ids, NOT shifted, with prompt and padding set to
            ``ignore_index``. Head k at position t predicts token t+k: its target is
            ``labels[:, t + k]`` for t in ``[0, S - k)``; the last k positions of head k
            have no target. Targets equal to ``ignore_index`` are ignored.
        weights: indexed by the TARGET position j, not by the predicting position.
            ``[B, S]``: ``weights[:, j]`` weighs every head's prediction of token j (head k at
            position t uses ``weights[:, t + k]``). ``[B, S, K]``: ``weights[:, j, k-1]``
            weighs head k's prediction of token j. ``None``: all ones. Must not require grad.
        unembed_bias: optional ``[V]``.
        normalization: with ``valid_k`` the valid targets of head k and ``CE`` computed in fp32,
            ``"token_mean"``: ``L_k = sum_{valid_k} w * CE / |valid_k|`` (weights rescale
            tokens, the per-token scale of the loss is kept);
            ``"weight_mean"``: ``L_k = sum_{valid_k} w * CE / sum_{valid_k} w`` (0 if that sum
            is 0), i.e. a weighted average, invariant to the overall scale of the weights.
        chunk_size: rows per fused block; bounds the logits memory to ``chunk_size x V``.
        ignore_index: label value meaning "no target".
        head_scales: ``None``: the loss is the mean of ``L_k`` over the heads with a target.
            K values ``s_k >= 0``: the loss is ``sum_k s_k L_k`` over the heads with a target
            (DeepSeek-V3's ``L_1 + lambda / D * sum_{k>1} L_k`` is ``[1, lambda/D, ...]``); each
            ``L_k`` keeps its own denominator. A head with ``s_k = 0`` is skipped: its CE is not
            computed (``nan`` in ``per_head_ce`` / ``per_head_loss``), e.g. a frozen head 1.

    Returns:
        ``MTPLossOutput`` whose ``loss`` is the mean of ``L_k`` over the heads with at least
        one valid target (= ``nanmean(per_head_loss)``), or the ``head_scales`` sum. If no
        head has a target the loss is an exact 0 still connected to the graph, so
        ``backward()`` works (all-zero grads) on every rank of a distributed run.

    Raises:
        ValueError: unknown ``normalization``, wrong ``weights`` / hidden shapes (the message
            names expected and actual shapes), or ``weights`` requiring grad.
    """
    w_full = check_inputs(head_hidden, labels, weights, normalization, head_scales)
    K = len(head_hidden)
    S = labels.shape[1]
    device = labels.device
    skipped = [head_scales is not None and head_scales[k] == 0 for k in range(K)]

    rows_h, rows_t, rows_w, all_counts = [], [], [], []
    for k in range(1, K + 1):
        targets = labels[:, k:]  # [B, S-k]: token t+k for positions t = 0..S-k-1
        valid = targets != ignore_index
        if skipped[k - 1]:  # counted, never computed
            all_counts.append(int(valid.sum()))
            valid = torch.zeros_like(valid)
        rows_h.append(head_hidden[k - 1][:, : S - k][valid])
        rows_t.append(targets[valid])
        rows_w.append(w_full[:, k:, k - 1][valid])
        if not skipped[k - 1]:
            all_counts.append(rows_t[-1].shape[0])
    counts = [t.shape[0] for t in rows_t]  # one host sync per head: the row gather needs sizes anyway
    per_head_tokens = torch.tensor(all_counts, dtype=torch.int64, device=device)
    active = [k for k in range(K) if counts[k] > 0]

    if not active:
        # Zero loss that still reaches every parameter, so backward() and DDP's "all params
        # got a grad" check both work on a batch that is all prompt / padding.
        zero = sum(h.sum() for h in head_hidden) * 0.0 + unembed_weight.sum() * 0.0
        if unembed_bias is not None:
            zero = zero + unembed_bias.sum() * 0.0
        nan = torch.full((K,), float("nan"), device=device)
        return MTPLossOutput(zero.to(torch.promote_types(zero.dtype, torch.float32)), nan, per_head_tokens, nan.clone())

    acc_dtype = torch.promote_types(rows_h[0].dtype, torch.float32)
    w_rows = [w.to(acc_dtype) for w in rows_w]
    if normalization == "token_mean":
        scales = [torch.tensor(1.0 / max(n, 1), dtype=acc_dtype, device=device) for n in counts]
    else:
        sums = [w.sum() for w in w_rows]
        scales = [torch.where(s != 0, 1.0 / torch.where(s != 0, s, 1.0), 0.0) for s in sums]
    # Fold 1/denominator_k and the head's share (1/K_active, or its head_scale) into each row's
    # weight: one fused call then returns the final loss directly, however many heads there are.
    share = [1.0 / len(active) if head_scales is None else float(head_scales[k]) for k in range(K)]
    row_weights = torch.cat([w * (scales[k] * share[k]) for k, w in enumerate(w_rows)])
    loss, ce_rows = fused_linear_cross_entropy(
        torch.cat(rows_h), unembed_weight, torch.cat(rows_t), row_weights, unembed_bias, chunk_size
    )

    per_head_ce = torch.full((K,), float("nan"), device=device)
    per_head_loss = torch.full((K,), float("nan"), device=device)
    for k, (ce_k, w_k) in enumerate(zip(ce_rows.split(counts), w_rows)):
        if counts[k] > 0:
            per_head_ce[k] = ce_k.mean()
            per_head_loss[k] = (w_k * ce_k).sum() * scales[k]
    return MTPLossOutput(loss, per_head_ce, per_head_tokens, per_head_loss)
