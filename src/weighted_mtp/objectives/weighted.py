"""What every weighted policy objective shares: the weighted MTP loss and the metrics that make
arms comparable.

Why `loss` means two things: in training it is the objective being optimised (weighted CE plus
any auxiliary terms); in validation (`sums["loss"]`) it is the *unweighted* MTP cross-entropy,
the same quantity the uniform baseline reports, so `val/loss` and `val/ce_head*` compare across
baseline, critic-weighted, Rho-1 and control arms."""

from __future__ import annotations

import torch
from torch import Tensor

from weighted_mtp.config.schema import LossConfig
from weighted_mtp.losses.mtp_loss import MTPLossOutput, mtp_cross_entropy
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.objectives.baseline import mtp_output_metrics
from weighted_mtp.weighting import weight_statistics


def weighted_policy_loss(model: MTPModel, head_hidden: list[Tensor], labels: Tensor, weights: Tensor | None,
                         loss_cfg: LossConfig) -> MTPLossOutput:
    return mtp_cross_entropy(
        head_hidden,
        model.unembedding.weight,
        labels,
        weights,
        unembed_bias=getattr(model.unembedding, "bias", None),
        normalization=loss_cfg.normalization,
        chunk_size=loss_cfg.chunk_size,
        head_scales=loss_cfg.head_scales,
    )


def policy_metrics(result: MTPLossOutput, weights: Tensor, mask: Tensor,
                   min_weight: float | None = None, max_weight: float | None = None) -> tuple[dict, dict]:
    """Per-head CE (unweighted), weight statistics over the response tokens, and the
    weighted / unweighted loss ratio (with token_mean normalisation, the effective learning-rate
    multiplier a weighting applies relative to the uniform baseline)."""
    metrics, sums = mtp_output_metrics(result)
    unweighted = result.per_head_ce.nanmean()
    metrics["policy_loss"] = result.loss.detach()
    metrics["unweighted_ce"] = unweighted
    metrics["weighted_unweighted_ratio"] = result.loss.detach().float() / unweighted.clamp(min=1e-12)
    stats = weight_statistics(weights, mask, min_weight=min_weight, max_weight=max_weight)
    metrics.update({f"weight/{k}": v for k, v in stats.items()})
    n_next = result.per_head_tokens[0].to(torch.float32)
    sums["loss"] = (unweighted.nan_to_num(0.0) * n_next, n_next)
    return metrics, sums
