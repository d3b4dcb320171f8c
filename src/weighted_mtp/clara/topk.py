"""CLaRa's differentiable top-k (Algorithm 1 of arXiv 2511.18659, as its code does it). The forward
pass selects exactly the k best candidates, in rank order, so the generator sees the same memory it
would at inference; the backward pass is that of k sequential masked softmaxes, so every candidate,
selected or not, gets a score gradient from the generator's loss alone (no relevance labels)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def differentiable_topk(scores: Tensor, k: int, tau: float) -> Tensor:
    """Z [B, k, D]: row j is the one-hot of the j-th highest score (forward); its gradient is that
    of p_j = softmax(s/tau + log(1 - taken + 1e-8)), the softmax over candidates not yet taken.

    As the code (not eq. 3.3 of the paper) does, scores are divided by tau BEFORE the log-mask.
    Z is built as hard + (soft - SG(soft)) rather than (hard + soft) - SG(soft): the same gradient,
    but the forward values are then exactly 0 and 1, not 1 +- an ulp."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, D], got shape {tuple(scores.shape)}")
    n_candidates = scores.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_candidates:
        raise ValueError(f"k must be an integer in 1..D, got k={k!r} for scores of shape {tuple(scores.shape)}")
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau!r}")
    s = scores / max(tau, 1e-6)
    hard = F.one_hot(s.topk(k, dim=-1).indices, n_candidates).to(s.dtype)  # [B, k, D], rank order
    taken = torch.zeros_like(s)
    soft = []
    for j in range(k):
        soft.append(torch.softmax(s + torch.log(1 - taken.detach() + 1e-8), dim=-1))
        taken = torch.clamp(taken + hard[:, j], max=1)
    z_soft = torch.stack(soft, dim=1)
    return hard + (z_soft - z_soft.detach())


def select(z: Tensor, memory: Tensor) -> Tensor:
    """M^(k) [B, k, l, d] = Z . M: slot j holds the j-th selected document's l memory vectors
    (exactly, in the forward pass, since Z is one-hot)."""
    if z.dim() != 3 or memory.dim() != 4 or z.shape[0] != memory.shape[0] or z.shape[2] != memory.shape[1]:
        raise ValueError(f"select needs Z [B, k, D] and memory [B, D, l, d] with the same B and D, "
                         f"got Z {tuple(z.shape)} and memory {tuple(memory.shape)}")
    return torch.einsum("bkn,bnld->bkld", z.to(memory.dtype), memory)


def topk_indices(z: Tensor) -> Tensor:
    """The selected candidate of each slot, LongTensor [B, k] (for Recall@k and for logging)."""
    if z.dim() != 3:
        raise ValueError(f"Z must be [B, k, D], got shape {tuple(z.shape)}")
    return z.argmax(dim=-1)
