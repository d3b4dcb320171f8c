"""Weighted cross-entropy fused with the unembedding matmul, computed a chunk of rows at a time.

Why: with a 32k-150k vocabulary and K prediction heads, the logits ``[rows, V]`` dwarf every
other activation (4096 tokens x 4 heads x 32k vocab is 2 GiB in fp32, and autograd keeps
several copies of that size alive). Here at most one ``[chunk_size, V]`` block of logits
ever exists. The gradients w.r.t. the inputs are computed during the forward pass (the
Liger-kernel trick), so nothing has to be recomputed: the cost is the same three matmuls as a
naive implementation (logits, grad_hidden, grad_weight). Backward only scales the saved
gradients by the incoming scalar gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def _chunked_forward(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    targets: Tensor,
    row_weights: Tensor,
    chunk_size: int,
    need_hidden: bool,
    need_weight: bool,
    need_bias: bool,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Return (loss, per-row CE, grad_hidden, grad_weight, grad_bias) for grad_output = 1."""
    device_type = hidden.device.type
    # Honour an enclosing autocast ourselves (matmuls in its dtype) and then switch it off, so
    # that the softmax arithmetic below stays in fp32 whatever the caller's settings are.
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = torch.promote_types(hidden.dtype, weight.dtype)
    # Softmax, CE and every accumulator run in at least fp32: bf16 sums over a 32k vocabulary
    # or over thousands of rows lose whole digits.
    acc_dtype = torch.promote_types(compute_dtype, torch.float32)
    n_rows = hidden.shape[0]
    with torch.autocast(device_type, enabled=False):
        h = hidden.detach().to(compute_dtype)
        w = weight.detach().to(compute_dtype)
        b = None if bias is None else bias.detach().to(compute_dtype)
        rw = row_weights.detach().to(device=hidden.device, dtype=acc_dtype)
        ce = torch.empty(n_rows, dtype=acc_dtype, device=hidden.device)
        grad_h = torch.empty_like(h) if need_hidden else None
        # Accumulate grad_weight in place when it is already fp32/fp64 (addmm_ is free), in a
        # separate fp32 buffer when the matmuls run in bf16 (so chunk sums do not round).
        grad_w = torch.zeros(weight.shape, dtype=acc_dtype, device=hidden.device) if need_weight else None
        grad_b = torch.zeros(weight.shape[0], dtype=acc_dtype, device=hidden.device) if need_bias else None
        need_any = need_hidden or need_weight or need_bias
        for start in range(0, n_rows, chunk_size):
            end = min(start + chunk_size, n_rows)
            h_c, t_c, rw_c = h[start:end], targets[start:end, None], rw[start:end, None]
            logits = h_c @ w.t() if b is None else torch.addmm(b, h_c, w.t())
            logits = logits.to(acc_dtype)  # no copy when already fp32
            target_logit = logits.gather(1, t_c)
            # One exp pass gives both the logsumexp and the softmax (in place, no extra [C, V]).
            row_max = logits.amax(1, keepdim=True)
            probs = logits.sub_(row_max).exp_()
            denom = probs.sum(1, keepdim=True)
            ce[start:end] = (row_max + denom.log() - target_logit).squeeze(1)
            if not need_any:
                continue
            dlogits = probs.mul_(rw_c / denom).scatter_add_(1, t_c, -rw_c)  # (p - onehot) * w
            if need_bias:
                grad_b += dlogits.sum(0)
            dlogits = dlogits.to(compute_dtype)
            if need_hidden:
                torch.mm(dlogits, w, out=grad_h[start:end])
            if need_weight:
                if grad_w.dtype == compute_dtype:
                    grad_w.addmm_(dlogits.t(), h_c)
                else:
                    grad_w += dlogits.t() @ h_c
            del logits, probs, dlogits
        loss = (ce * rw).sum()
    return (
        loss,
        ce,
        None if grad_h is None else grad_h.to(hidden.dtype),
        None if grad_w is None else grad_w.to(weight.dtype),
        None if grad_b is None else grad_b.to(bias.dtype),
    )


class FusedLinearCrossEntropy(torch.autograd.Function):
    """autograd wrapper: forward does all the work, backward scales the saved gradients."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, row_weights, chunk_size):
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        loss, ce, grad_h, grad_w, grad_b = _chunked_forward(
            hidden, weight, bias, targets, row_weights, chunk_size, need_h, need_w, bool(need_b)
        )
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.mark_non_differentiable(ce)
        return loss, ce

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, _grad_ce):
        def scale(g: Tensor | None) -> Tensor | None:
            return None if g is None else g * grad_loss.to(g.dtype)

        grad_h, grad_w, grad_b = ctx.saved_tensors
        return scale(grad_h), scale(grad_w), scale(grad_b), None, None, None


def fused_linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    row_weights: Tensor,
    bias: Tensor | None = None,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """``sum_i row_weights[i] * CE(hidden[i] @ weight.T + bias, targets[i])`` without full logits.

    Args:
        hidden: ``[N, D]`` rows; every row must have a valid target (gather first).
        weight: ``[V, D]`` unembedding; may be frozen (then no grad_weight matmul is done).
        targets: ``[N]`` int64 in ``[0, V)``.
        row_weights: ``[N]`` float, treated as data (never differentiated).
        bias: optional ``[V]``.
        chunk_size: rows per block; peak extra memory is about ``chunk_size * V * 8`` bytes.

    Returns:
        ``(loss, ce)``: the scalar weighted sum (differentiable; fp32, or fp64 for fp64 inputs)
        and the detached unweighted per-row CE ``[N]`` in the same dtype, so callers can
        report per-head CE without a second pass.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"expected hidden [N, D] and weight [V, D], got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    if targets.shape != hidden.shape[:1] or row_weights.shape != hidden.shape[:1]:
        raise ValueError(
            f"expected targets and row_weights of shape [{hidden.shape[0]}], "
            f"got {tuple(targets.shape)} and {tuple(row_weights.shape)}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    targets = targets.long()
    tensors = [hidden, weight] + ([] if bias is None else [bias])
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return FusedLinearCrossEntropy.apply(hidden, weight, bias, targets, row_weights.detach(), chunk_size)
    # Inference / evaluation: skip the two gradient matmuls entirely (autograd.Function would
    # report needs_input_grad=True under no_grad and make us pay for them).
    loss, ce, *_ = _chunked_forward(hidden, weight, bias, targets, row_weights, chunk_size, False, False, False)
    return loss, ce
