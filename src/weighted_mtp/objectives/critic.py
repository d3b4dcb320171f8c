"""Critic (stage 1): a value head on an LM backbone that scores solutions.

Pointwise: each sample's values regress to its own label (BCE or MSE against is_correct, or
TD(lambda) targets with terminal reward R = is_correct). Seed 001 found this memorises
instruction -> score. Pairwise (Bradley-Terry): within a problem, the correct solution's mean
response value must exceed the incorrect one's, -log sigmoid(mean_v_pos - mean_v_neg - margin);
the instruction is the same on both sides, so it cannot be memorised. Validation is always on
(correct, incorrect) pairs of problems unseen in training, so both modes are judged alike."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from weighted_mtp.config.registry import register_objective
from weighted_mtp.config.schema import AuxModelConfig, Config
from weighted_mtp.constants import IGNORE_INDEX
from weighted_mtp.losses.critic_losses import bradley_terry_loss, pairwise_stats, pointwise_loss
from weighted_mtp.metrics.critic_metrics import class_means, f1_at_threshold, position_correlation, roc_auc, spikiness
from weighted_mtp.models.critic import CriticModel
from weighted_mtp.models.load import DTYPES, load_tokenizer, resolve_model_path
from weighted_mtp.models.lora import lora_options
from weighted_mtp.objectives.base import ObjectiveOutput, PolicyObjective
from weighted_mtp.rl.returns import lambda_returns, sequence_mean


@dataclass
class CriticModelConfig(AuxModelConfig):
    """Stage critic: `path` is the backbone, a local HF causal-LM directory (an MTP export works:
    its trunk and head 1 are a plain HF model); None: the policy's path. Stage verifiable with
    critic_mode separate: a trained critic (the critic stage's `final/`), used frozen."""


@dataclass
class CriticModelFields:
    """`models.critic`: the critic's backbone (stage critic) or the trained critic (verifiable)."""

    critic: CriticModelConfig = field(default_factory=CriticModelConfig)


@dataclass
class CriticTrainingFields:
    """The critic's `training.*` fields (its loss and value head); the verifiable arm reads them
    too for the critic it trains or uses."""

    # Critic training (stage: critic). pointwise: a loss per sample against is_correct;
    # pairwise: Bradley-Terry on mean response values of (correct, incorrect) pairs of a problem.
    loss_type: Literal["pointwise", "pairwise"] = "pointwise"
    pointwise_loss: Literal["bce", "mse", "lambda_return"] = "bce"
    pairwise_margin: float = 0.0
    td_gamma: float = 1.0
    td_lambda: float = 0.95
    value_head_type: Literal["linear", "mlp"] = "mlp"
    dropout: float = 0.0
    # 0 with use_lora false: frozen backbone (hidden states detached), only the value head trains.
    num_unfrozen_layers: int = 0


@register_objective("critic", training=(CriticTrainingFields,), models=(CriticModelFields,))
class CriticObjective(PolicyObjective):
    val_batch_kind = "pairwise"
    loss_units = "rows"  # both losses are means over sequences (or pairs): ranks combine by rows

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.t = cfg.training
        self.batch_kind = "pairwise" if self.t.loss_type == "pairwise" else "sft"

    def build_model(self) -> tuple[CriticModel, Any, Path]:
        t = self.t
        backbone = resolve_model_path(self.cfg.models.critic.path or self.cfg.models.policy.path, self.cfg)
        mode = "lora" if t.use_lora else ("last_n" if t.num_unfrozen_layers > 0 else "frozen")
        lora = lora_options(t.lora) if t.use_lora else None
        model = CriticModel.build(str(backbone), head_type=t.value_head_type, dropout=t.dropout, mode=mode,
                                  n_unfrozen_layers=t.num_unfrozen_layers, lora=lora,
                                  dtype=DTYPES[self.cfg.models.critic.dtype],
                                  training_loss="pairwise" if t.loss_type == "pairwise" else t.pointwise_loss)
        return model, load_tokenizer(backbone), backbone

    def load_model(self, directory: Path) -> CriticModel:
        return CriticModel.from_pretrained(directory)

    def _pointwise(self, values: Tensor, mask: Tensor, is_correct: Tensor) -> Tensor:
        if self.t.pointwise_loss == "lambda_return":
            targets = lambda_returns(values, is_correct, mask, self.t.td_gamma, self.t.td_lambda)
            return pointwise_loss(values, mask, targets, "mse")
        return pointwise_loss(values, mask, is_correct, self.t.pointwise_loss)

    def __call__(self, model: CriticModel, batch: dict[str, Any], *, training: bool) -> ObjectiveOutput:
        if "pos_input_ids" not in batch:  # pointwise training batch
            values = model(batch["input_ids"], batch["attention_mask"])
            mask = batch["labels"] != IGNORE_INDEX
            label = batch["is_correct"].to(values.dtype)
            loss = self._pointwise(values, mask, label)
            seq = sequence_mean(values.detach(), mask)
            return ObjectiveOutput(loss=loss, metrics={"loss": loss.detach()},
                                   samples={"score": seq, "label": label})
        n = batch["pos_input_ids"].shape[0]
        ids = torch.cat([batch["pos_input_ids"], batch["neg_input_ids"]])
        values = model(ids, torch.cat([batch["pos_attention_mask"], batch["neg_attention_mask"]]))
        mask = torch.cat([batch["pos_labels"], batch["neg_labels"]]) != IGNORE_INDEX
        seq = sequence_mean(values, mask)
        label = torch.cat([values.new_ones(n), values.new_zeros(n)])
        if self.t.loss_type == "pairwise":
            loss = bradley_terry_loss(seq[:n], seq[n:], self.t.pairwise_margin)
        else:
            loss = self._pointwise(values, mask, label)
        stats = pairwise_stats(seq[:n].detach(), seq[n:].detach())
        metrics = {"loss": loss.detach(), **stats}
        out = ObjectiveOutput(loss=loss, metrics=metrics,
                              samples={"score": seq.detach(), "label": label, "pair_diff": (seq[:n] - seq[n:]).detach()})
        out.sums["loss"] = (loss.detach() * n, loss.new_tensor(float(n)))
        if not training:  # token-level diagnostics, averaged over batches
            for name, fn in (("position_corr", position_correlation), ("spikiness", spikiness)):
                value = fn(values.detach(), mask)
                if math.isfinite(value):
                    out.sums[name] = (torch.tensor(value), torch.tensor(1.0))
        return out

    def validation_metrics(self, samples: dict[str, Tensor], reference: dict[str, Tensor] | None) -> dict[str, float]:
        """AUC of sequence value vs is_correct, class means and their gap, pairwise accuracy,
        and F1 at a threshold calibrated on training data (the midpoint of the training class
        means), never on the split being scored."""
        scores, labels = samples["score"], samples["label"]
        out = {"auc": roc_auc(scores, labels), **class_means(scores, labels)}
        if "pair_diff" in samples:
            diff = samples["pair_diff"]
            out["pairwise_accuracy"] = float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())
        calib = class_means((reference or samples)["score"], (reference or samples)["label"])
        threshold = 0.5 * (calib["mean_correct"] + calib["mean_incorrect"])
        out["f1"] = f1_at_threshold(scores, labels, threshold) if math.isfinite(threshold) else float("nan")
        out["f1_threshold"] = threshold
        return out
