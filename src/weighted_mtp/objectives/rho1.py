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
from typing import Any

import torch

from weighted_mtp.config.schema import Config
from weighted_mtp.errors import ConfigError
from weighted_mtp.losses.token_ce import next_token_cross_entropy
from weighted_mtp.models.load import load_policy, load_tokenizer
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.models.reference import ReferenceModel, check_same_tokenizer
from weighted_mtp.objectives.base import ObjectiveOutput, PolicyObjective, TokenWeights
from weighted_mtp.objectives.weighted import policy_metrics, weighted_policy_loss
from weighted_mtp.weighting import WEIGHTINGS, WeightingContext, WeightingInputs


class Rho1Objective(PolicyObjective):
    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.w = cfg.training.weighting
        if self.w.scheme != "rho1":
            raise ConfigError(f"config key 'training.weighting.scheme': stage rho1 needs 'rho1', got {self.w.scheme!r}")
        if not 0.0 < self.w.rho1_k_percent <= 1.0:
            raise ConfigError(f"config key 'training.weighting.rho1_k_percent': must be in (0, 1], "
                              f"got {self.w.rho1_k_percent}")
        self.reference: ReferenceModel | None = None

    def build_model(self) -> tuple[MTPModel, Any, Path]:
        model, tokenizer, path = load_policy(self.cfg)
        self._check_reference_tokenizer(tokenizer, path)
        return model, tokenizer, path

    def load_model(self, directory: Path) -> MTPModel:
        model = super().load_model(directory)
        self._check_reference_tokenizer(load_tokenizer(directory), directory)
        return model

    def _reference_path(self) -> Path | None:
        spec = self.cfg.models.reference.path
        if not spec:
            return None
        path = Path(spec).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(f"config key 'models.reference.path': {spec} is not a local HF model directory "
                              "(no config.json)")
        return path

    def _check_reference_tokenizer(self, tokenizer, policy_path: Path) -> None:
        path = self._reference_path()
        if path is not None:  # fail before training, not at the first batch
            check_same_tokenizer(tokenizer, load_tokenizer(path), policy_path, path)

    def _reference_ce(self, batch: dict[str, Any]) -> torch.Tensor:
        if "ref_ce" in batch:
            return batch["ref_ce"]
        if self.reference is None:
            path = self._reference_path()
            if path is None:
                raise ConfigError("config key 'models.reference.path' is null and the batches carry no ref_ce "
                                  "column; set a reference model or precompute one with `wmtp data ref-ce`")
            from weighted_mtp.models.load import DTYPES

            self.reference = ReferenceModel.load(path, dtype=DTYPES[self.cfg.models.reference.dtype])
        ids = batch["input_ids"]
        self.reference.to(ids.device)
        return self.reference.token_ce(ids, batch["attention_mask"], batch["labels"],
                                       chunk_size=self.cfg.training.loss.chunk_size)

    def __call__(self, model: MTPModel, batch: dict[str, Any], *, training: bool) -> ObjectiveOutput:
        labels = batch["labels"]
        mask = labels != -100
        mask[:, 0] = False  # position 0 has no context: no next-token target (never a response token anyway)
        out = model(batch["input_ids"], batch["attention_mask"])
        policy_ce = next_token_cross_entropy(
            out.head_hidden[0].detach(), model.unembedding.weight.detach(), labels,
            bias=getattr(model.unembedding, "bias", None), chunk_size=self.cfg.training.loss.chunk_size,
        )
        ctx = WeightingContext(cfg=self.w, training=training)
        inputs = WeightingInputs(mask=mask, policy_ce=policy_ce, reference_ce=self._reference_ce(batch).float())
        weighting = WEIGHTINGS["rho1"](inputs, ctx)
        weights = weighting.weights.to(out.head_hidden[0].dtype)
        result = weighted_policy_loss(model, out.head_hidden, labels, weights, self.cfg.training.loss)
        metrics, sums = policy_metrics(result, weights, mask)
        metrics.update({f"weight/{k}": v for k, v in weighting.metrics.items()})
        metrics["loss"] = result.loss.detach()
        return ObjectiveOutput(loss=result.loss, metrics=metrics, sums=sums,
                               token_weights=TokenWeights(batch["input_ids"], labels, weights.detach()))
