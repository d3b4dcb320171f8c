"""Homoscedastic-uncertainty task weighting (Kendall, Gal & Cipolla, CVPR 2018), as StepER uses it
to balance its three step-wise losses: with s_j = log sigma_j^2 learned,

    L = sum_j 0.5 * exp(-s_j) * L_j + 0.5 * s_j

A hard (noisy) task grows its sigma and is down-weighted; the 0.5 * s_j term keeps sigma from
running off. The optimum for fixed L_j is s_j = log L_j. Parameterising by the log-variance keeps
the weight positive and the loss smooth (no division by a learned quantity near zero)."""

from __future__ import annotations

import torch
from torch import Tensor


def uncertainty_weighted_loss(task_losses: Tensor, log_vars: Tensor, present: Tensor | None = None) -> Tensor:
    """task_losses, log_vars: [J]; present: bool [J], tasks absent from the batch contribute
    nothing (neither their loss nor the 0.5 * s_j regulariser, which alone would push s_j down
    on every batch that happens to lack the task)."""
    if task_losses.shape != log_vars.shape or task_losses.dim() != 1:
        raise ValueError(f"task_losses and log_vars must both be [J], got {tuple(task_losses.shape)} and "
                         f"{tuple(log_vars.shape)}")
    terms = 0.5 * torch.exp(-log_vars) * task_losses + 0.5 * log_vars
    if present is not None:
        terms = torch.where(present, terms, torch.zeros_like(terms))
    return terms.sum()


def sigmas(log_vars: Tensor) -> Tensor:
    """sigma_j = exp(s_j / 2), what the logs report."""
    return torch.exp(0.5 * log_vars.detach())
