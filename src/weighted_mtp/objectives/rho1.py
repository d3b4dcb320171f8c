"""Rho-1 (selective language modelling) on the MTP loss: train on the target tokens the policy
finds harder than a reference model does.

excess(x_j) = CE_policy(x_j | x_<j) - CE_reference(x_j | x_<j): both are next-token losses of the
same target under the same context. The policy side is head 1's CE, computed without gradient
from the hidden state the loss uses anyway (one extra unembedding pass, no extra transformer
forward). The weight of a target token applies to every head that predicts it, so heads 2..K are
not scored against a reference that saw more context (the project we replace compared unlike
quantities there). With `loss.normalization: weight_mean` the top-k mask is normalised by the
number of selected tokens, as in the paper.

The reference is any local HF causal-LM directory (`models.reference.path`), loaded on first
use; batches that carry a precomputed `ref_ce` column (`wmtp data ref-ce`) need no reference
model at all, so the loop holds one model."""

from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from weighted_mtp.config.registry import register_objective
from weighted_mtp.config.schema import AuxModelConfig, Config
from weighted_mtp.constants import IGNORE_INDEX
from weighted_mtp.errors import ConfigError
from weighted_mtp.losses.token_ce import next_token_cross_entropy
from weighted_mtp.models.load import load_policy, load_tokenizer
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.objectives.base import ObjectiveOutput, PolicyArmObjective, TokenWeights, policy_rows
from weighted_mtp.objectives.reference_ce import ReferenceCE
from weighted_mtp.objectives.weighted import policy_metrics, weighted_policy_loss
from weighted_mtp.weighting import WEIGHTINGS, WeightingContext, WeightingInputs
from weighted_mtp.weighting.config import WeightingFields


def head1_ce(model: MTPModel, head_hidden, labels, chunk_size: int):
    """The policy's next-token CE of each target token, without gradient, from the hidden state
    the loss uses anyway (one extra unembedding pass, no extra transformer forward)."""
    return next_token_cross_entropy(head_hidden[0].detach(), model.unembedding.weight.detach(), labels,
                                    bias=getattr(model.unembedding, "bias", None), chunk_size=chunk_size)


@dataclass
class ReferenceModelConfig(AuxModelConfig):
    """Rho-1 reference: `path` is a local HF causal-LM directory (an MTP export works: its head 1
    is the next-token model) that tokenizes exactly like the policy (excess loss is per token).
    None: the batches must carry a precomputed `ref_ce` column (`wmtp data ref-ce`)."""


@dataclass
class ReferenceModelFields:
    """`models.reference`: Rho-1's reference model (also the combined scheme's)."""

    reference: ReferenceModelConfig = field(default_factory=ReferenceModelConfig)


@register_objective("rho1", training=(WeightingFields,), models=(ReferenceModelFields,))
class Rho1Objective(PolicyArmObjective):
    applies_token_weights = True

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.w = cfg.training.weighting
        if self.w.scheme != "rho1":
            raise ConfigError(f"config key 'training.weighting.scheme': stage rho1 needs 'rho1', got {self.w.scheme!r}")
        if not 0.0 < self.w.rho1_k_percent <= 1.0:
            raise ConfigError(f"config key 'training.weighting.rho1_k_percent': must be in (0, 1], "
                              f"got {self.w.rho1_k_percent}")
        self.reference = ReferenceCE(cfg)

    def build_model(self) -> tuple[MTPModel, Any, Path]:
        model, tokenizer, path = load_policy(self.cfg)
        self.reference.check_tokenizer(tokenizer, path)
        return model, tokenizer, path

    def load_model(self, directory: Path) -> MTPModel:
        model = super().load_model(directory)
        self.reference.check_tokenizer(load_tokenizer(directory), directory)
        return model

    def __call__(self, model: MTPModel, batch: dict[str, Any], *, training: bool) -> ObjectiveOutput:
        rows = policy_rows(batch)
        labels = rows["labels"]
        mask = labels != IGNORE_INDEX
        mask[:, 0] = False  # position 0 has no context: no next-token target (never a response token anyway)
        out = model(rows["input_ids"], rows["attention_mask"])
        policy_ce = head1_ce(model, out.head_hidden, labels, self.cfg.training.loss.chunk_size)
        ctx = WeightingContext(cfg=self.w, training=training)
        inputs = WeightingInputs(mask=mask, policy_ce=policy_ce, reference_ce=self.reference(rows))
        weighting = WEIGHTINGS["rho1"](inputs, ctx)
        weights = weighting.weights.to(out.head_hidden[0].dtype)
        result = weighted_policy_loss(model, out.head_hidden, labels, weights, self.cfg.training.loss)
        metrics, sums = policy_metrics(result, weights, mask)
        metrics.update({f"weight/{k}": v for k, v in weighting.metrics.items()})
        metrics["loss"] = result.loss.detach()
        return ObjectiveOutput(loss=result.loss, metrics=metrics, sums=sums,
                               token_weights=TokenWeights(rows["input_ids"], labels, weights.detach()))
