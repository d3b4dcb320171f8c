"""Per-token next-token cross-entropy without gradients: a reference model's score of each target.

Why a separate function: Rho-1 (and any "excess loss" weighting) needs CE_reference for every
target token, as data, never as a loss. It reuses the fused chunked CE (gather the rows that have
a target, then at most ``chunk_size x V`` logits at a time, softmax in fp32) on its no-grad
path, so scoring a batch with a 32k-150k vocabulary costs no more memory than the training loss
does, and the two CEs that Rho-1 subtracts are computed by the same arithmetic.
"""

from __future__ import annotations

import torch
from torch import Tensor

from weighted_mtp.constants import IGNORE_INDEX
from weighted_mtp.losses.fused_linear_ce import fused_linear_cross_entropy


@torch.no_grad()
def next_token_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    bias: Tensor | None = None,
    chunk_size: int = 1024,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """``ce[b, j] = -log softmax(hidden[b, j-1] @ weight.T + bias)[labels[b, j]]``.

    Indexed by the TARGET position, like the loss weights in ``mtp_cross_entropy``, so an
    excess-loss weight is simply ``ce_policy - ce_reference`` at the same ``[b, j]``.

    Args:
        hidden: ``[B, S, D]`` final (normed) hidden states of a next-token model.
        weight: ``[V, D]`` output embedding.
        labels: ``[B, S]`` aligned with the input ids (HF style, not shifted); ``ignore_index``
            marks positions without a loss.
        bias: optional ``[V]`` output bias.
        chunk_size: rows per logits block (peak extra memory about ``chunk_size * V * 8`` bytes).

    Returns:
        ``[B, S]`` float32, never requiring grad; 0 at ``j = 0`` (no context) and wherever
        ``labels`` is ``ignore_index``.

    Raises:
        ValueError: shapes that do not fit together, or a target id outside ``[0, V)`` (a
            tokenizer whose vocabulary is larger than the model's embedding).
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be [B, S], got shape {tuple(labels.shape)}")
    B, S = labels.shape
    if hidden.dim() != 3 or tuple(hidden.shape[:2]) != (B, S):
        raise ValueError(f"hidden must be [B, S, D] = [{B}, {S}, D], got {tuple(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[2]:
        raise ValueError(f"weight must be [V, D] with D = {hidden.shape[2]}, got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must be [V] = [{weight.shape[0]}], got {tuple(bias.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    labels = labels.to(hidden.device)
    out = torch.zeros(B, S, dtype=torch.float32, device=hidden.device)
    if S < 2:
        return out
    targets = labels[:, 1:]
    valid = targets != ignore_index
    rows = hidden[:, :-1][valid]  # only rows with a target ever reach the matmul
    if rows.shape[0] == 0:
        return out
    t = targets[valid].long()
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= weight.shape[0]:
        raise ValueError(
            f"label ids must lie in [0, {weight.shape[0]}) (the model's vocabulary), got ids in [{lo}, {hi}]; "
            "is the tokenizer the model's own?"
        )
    ones = torch.ones(rows.shape[0], dtype=torch.float32, device=hidden.device)
    _, ce = fused_linear_cross_entropy(rows, weight, t, ones, bias, chunk_size)
    out[:, 1:][valid] = ce.float()
    return out
