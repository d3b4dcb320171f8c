"""Evaluation metrics for the value critic, on detached CPU data; all return python floats.

Inputs are 1-D tensors or lists of per-sample scores with 0/1 (or bool) labels, or ``[B, S]``
token values with a response ``mask`` (one contiguous span per row). Computed in float64.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

ArrayLike = Tensor | Sequence[float]


def _scores_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[Tensor, Tensor]:
    s = torch.as_tensor(scores).detach().cpu().to(torch.float64)
    y = torch.as_tensor(labels).detach().cpu()
    if s.dim() != 1 or y.shape != s.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {tuple(s.shape)} and {tuple(y.shape)}")
    yf = y.to(torch.float64)
    if not bool(((yf == 0) | (yf == 1)).all()):
        raise ValueError("labels must be 0/1 or bool")
    return s, yf.bool()


def roc_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """P(score of a random positive > that of a random negative), ties counting 1/2.

    Mann-Whitney: AUC = (sum of positives' ranks - P(P+1)/2) / (P N), with average (mid) ranks
    for tied scores, which is exactly the tie-as-half pair count in O(n log n). nan if a class is
    missing.
    """
    s, y = _scores_labels(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, inverse, counts = torch.unique(s, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)  # 1-based rank of each tie group's last member
    mid = ends - (counts.to(torch.float64) - 1) / 2  # average rank of the group
    rank_sum = mid[inverse][y].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def f1_at_threshold(scores: ArrayLike, labels: ArrayLike, threshold: float) -> float:
    """F1 = 2TP / (2TP + FP + FN) predicting positive when score >= threshold; 0 if 0/0."""
    s, y = _scores_labels(scores, labels)
    pred = s >= threshold
    tp = int((pred & y).sum())
    denom = 2 * tp + int((pred & ~y).sum()) + int((~pred & y).sum())
    return 2 * tp / denom if denom else 0.0


def best_f1_threshold(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """(threshold, F1) maximising F1 over thresholds equal to the observed scores.

    For each distinct score u (ascending): TP(u) = #positives with s >= u, FP(u) likewise, and
    F1 = 2TP / (TP + FP + P) (since FN = P - TP), all by reverse cumsums. Ties in F1 go to the
    smallest threshold. (nan, 0.0) for empty input.
    """
    s, y = _scores_labels(scores, labels)
    if s.numel() == 0:
        return math.nan, 0.0
    uniq, inverse = torch.unique(s, sorted=True, return_inverse=True)
    pos = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, y.to(torch.float64))
    neg = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, (~y).to(torch.float64))
    tp = pos.flip(0).cumsum(0).flip(0)
    fp = neg.flip(0).cumsum(0).flip(0)
    f1 = 2 * tp / (tp + fp + y.sum())  # tp + fp >= 1 at every observed threshold
    k = int(torch.argmax(f1))
    return uniq[k].item(), f1[k].item()


def position_correlation(values: Tensor, mask: Tensor) -> float:
    """Pearson r between V_t and the position within the response (t - t0), pooled over all
    response tokens of all rows: a length/position-bias check (a good critic should not just
    count tokens). values, mask: ``[B, S]``. nan if < 2 tokens or either variable is constant.
    """
    m = mask.detach().cpu().bool()
    v = values.detach().cpu().to(torch.float64)
    pos = (m.cumsum(-1) - 1).to(torch.float64)  # t - t0 on the (contiguous) response span
    x, y = pos[m], v[m]
    if x.numel() < 2:
        return math.nan
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum()) / denom if denom > 0 else math.nan


def spikiness(values: Tensor, mask: Tensor) -> float:
    """Mean over sequences of max_t |dV_t| / mean_t |dV_t|, dV_t = V_{t+1} - V_t over consecutive
    response tokens. 1 = changes spread evenly; ~n_steps = all change in one jump. Rows with < 3
    response tokens (< 2 steps) or mean |dV| = 0 are skipped; nan if none remain.
    values, mask: ``[B, S]``.
    """
    m = mask.detach().cpu().bool()
    v = values.detach().cpu().to(torch.float64)
    step = m[:, 1:] & m[:, :-1]  # [B, S-1]: both ends in the response
    d = torch.where(step, (v[:, 1:] - v[:, :-1]).abs(), torch.zeros((), dtype=torch.float64))
    n = step.sum(-1)
    mean = d.sum(-1) / n.clamp(min=1)
    ok = (n >= 2) & (mean > 0)
    if not bool(ok.any()):
        return math.nan
    return float((d.amax(-1)[ok] / mean[ok]).mean())


def class_means(scores: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """mean_correct = mean score of label-1 samples, mean_incorrect of label-0 ones,
    gap = mean_correct - mean_incorrect; nan where a class is empty."""
    s, y = _scores_labels(scores, labels)
    mc = float(s[y].mean()) if bool(y.any()) else math.nan
    mi = float(s[~y].mean()) if bool((~y).any()) else math.nan
    return {"mean_correct": mc, "mean_incorrect": mi, "gap": mc - mi}
