"""Uniform multi-token SFT: every response token counts the same. The reference arm that every
weighting method is compared against, so it goes through exactly the same loss code."""

from __future__ import annotations

from typing import Any

from weighted_mtp.config.registry import register_objective
from weighted_mtp.losses.mtp_loss import mtp_cross_entropy
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.objectives.base import ObjectiveOutput, PolicyArmObjective, policy_rows


def mtp_output_metrics(result, prefix: str = "") -> tuple[dict, dict]:
    """Per-head CE as metrics and as exact (sum, count) pairs for validation."""
    metrics, sums = {}, {}
    for k in range(result.per_head_ce.shape[0]):
        ce, n = result.per_head_ce[k], result.per_head_tokens[k]
        metrics[f"{prefix}ce_head{k + 1}"] = ce
        sums[f"{prefix}ce_head{k + 1}"] = (ce.nan_to_num(0.0) * n, n.to(ce.dtype))
    return metrics, sums


@register_objective("baseline")
class BaselineObjective(PolicyArmObjective):
    def __call__(self, model: MTPModel, batch: dict[str, Any], *, training: bool) -> ObjectiveOutput:
        batch = policy_rows(batch)
        out = model(batch["input_ids"], batch["attention_mask"])
        loss_cfg = self.cfg.training.loss
        result = mtp_cross_entropy(
            out.head_hidden,
            model.unembedding.weight,
            batch["labels"],
            None,
            unembed_bias=getattr(model.unembedding, "bias", None),
            normalization=loss_cfg.normalization,
            chunk_size=loss_cfg.chunk_size,
            head_scales=loss_cfg.head_scales,
        )
        metrics, sums = mtp_output_metrics(result)
        metrics["loss"] = result.loss.detach()
        n_next = result.per_head_tokens[0].to(result.loss.dtype)  # weight batches by their targets
        sums["loss"] = (result.loss.detach() * n_next, n_next)
        return ObjectiveOutput(loss=result.loss, metrics=metrics, sums=sums)
