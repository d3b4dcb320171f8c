"""Verifiable WMTP (stage 2): weight each response token of the MTP loss by how much it moved
the critic's value, exp(whitened GAE advantage / beta), clipped.

The policy learns from correct solutions only (reward 1); the critic's value targets use both
sides of each (correct, incorrect) pair, reward 1 and 0, so the verifiable reward enters both
the advantages (delta_T = R - V(s_{T-1})) and the value loss. With `use_pairwise`, an auxiliary
Bradley-Terry loss ranks each pair's mean values. Total:

    policy + value_coef * value + aux_coef * pairwise

The critic is either a separate model (`critic_mode: separate`, the critic stage's export, in
eval mode, backbone frozen; with `critic_trainable` its value head keeps learning from the value
and pairwise terms, otherwise they are diagnostics without gradient) or a value head on the
policy trunk (`critic_mode: shared`, trained by the value and pairwise terms with the trunk). The matched
controls (`random_matched`, `shuffled`) and `uniform` run through this same objective, so the
only difference between arms is the weights. Validation uses the baseline's SFT split (correct
solutions) so validation CE compares across arms; it never updates the whitening statistics or
the training random stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from weighted_mtp.config.schema import Config
from weighted_mtp.errors import ConfigError
from weighted_mtp.losses.critic_losses import bradley_terry_loss, pairwise_stats
from weighted_mtp.models.critic import CRITIC_CONFIG_FILE, CriticModel
from weighted_mtp.models.load import load_policy, load_tokenizer
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.models.reference import check_same_tokenizer
from weighted_mtp.objectives.base import ObjectiveOutput, PolicyObjective, TokenWeights
from weighted_mtp.objectives.weighted import policy_metrics, weighted_policy_loss
from weighted_mtp.rl.returns import lambda_returns, masked_mean, sequence_mean
from weighted_mtp.weighting import WEIGHTINGS, RunningMoments, WeightingContext, WeightingInputs

CRITIC_SCHEMES = ("critic", "random_matched", "shuffled", "uniform")


def _rows(batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor, int | None]:
    """(input_ids, attention_mask, labels, is_correct) over all rows, and the number of pairs
    (rows [:n] correct, [n:] incorrect) for pairwise batches, None for SFT batches."""
    if "pos_input_ids" in batch:
        n = batch["pos_input_ids"].shape[0]
        cat = {k: torch.cat([batch[f"pos_{k}"], batch[f"neg_{k}"]]) for k in ("input_ids", "attention_mask", "labels")}
        correct = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)]).to(cat["labels"].device)
        return cat["input_ids"], cat["attention_mask"], cat["labels"], correct, n
    return batch["input_ids"], batch["attention_mask"], batch["labels"], batch["is_correct"].bool(), None


class VerifiableObjective(PolicyObjective):
    batch_kind = "pairwise"
    val_batch_kind = "sft"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        t = cfg.training
        self.t, self.w = t, t.weighting
        if self.w.scheme not in CRITIC_SCHEMES:
            raise ConfigError(f"config key 'training.weighting.scheme': stage verifiable supports "
                              f"{', '.join(CRITIC_SCHEMES)}, got {self.w.scheme!r} (rho1 is its own stage)")
        if t.critic_mode == "separate" and not cfg.models.critic.path:
            raise ConfigError("config key 'models.critic.path': critic_mode separate needs a trained critic "
                              "directory (the critic stage's final/); or set training.critic_mode=shared")
        self.stats = RunningMoments(self.w.stats_momentum, self.w.stats_warmup_steps)
        self.generator = torch.Generator().manual_seed(cfg.runtime.seed)
        self.critic: CriticModel | None = None

    # ---- models ------------------------------------------------------------------------------

    def build_model(self) -> tuple[MTPModel, Any, Path]:
        model, tokenizer, path = load_policy(self.cfg)
        if self.t.critic_mode == "shared":
            model.attach_value_head(self.t.value_head_type, self.t.dropout)
        else:
            self._load_critic(tokenizer, path)
        return model, tokenizer, path

    def load_model(self, directory: Path) -> MTPModel:
        model = super().load_model(directory)
        if self.t.critic_mode == "shared" and model.value_head is None:
            raise ConfigError(f"{directory}: checkpoint has no value head but training.critic_mode is shared")
        if self.t.critic_mode == "separate":
            self._load_critic(load_tokenizer(directory), directory)
        return model

    def _load_critic(self, policy_tokenizer, policy_path: Path) -> None:
        path = Path(self.cfg.models.critic.path).expanduser()
        if not (path / CRITIC_CONFIG_FILE).is_file():
            raise ConfigError(f"config key 'models.critic.path': {path} is not a critic export "
                              f"(no {CRITIC_CONFIG_FILE}); train one with configs/critic/*.yaml")
        check_same_tokenizer(policy_tokenizer, load_tokenizer(path), policy_path, path)
        critic = CriticModel.from_pretrained(path)
        critic.eval()  # no dropout: the values are read as token credit
        critic.requires_grad_(False)
        if self.t.critic_trainable:
            critic.value_head.requires_grad_(True)
        self.critic = critic

    def to(self, device: torch.device) -> None:
        if self.critic is not None:
            self.critic.to(device)

    def extra_parameters(self) -> list:
        if self.critic is None or not self.t.critic_trainable:
            return []
        return [("value_head", p) for p in self.critic.value_head.parameters()]

    # ---- the step ----------------------------------------------------------------------------

    def __call__(self, model: MTPModel, batch: dict[str, Any], *, training: bool) -> ObjectiveOutput:
        t, w = self.t, self.w
        ids, attn, labels, correct, n_pairs = _rows(batch)
        mask = labels != -100
        rewards = correct.float()
        shared = t.critic_mode == "shared"
        critic_learns = shared or t.critic_trainable
        pos_rows = correct.nonzero().squeeze(-1)

        if shared:  # one forward over every row: the value head needs the incorrect ones too
            out = model(ids, attn)
            values = model.values(out)
            head_hidden = [h.index_select(0, pos_rows) for h in out.head_hidden]
        else:
            out = model(ids.index_select(0, pos_rows), attn.index_select(0, pos_rows))
            with torch.set_grad_enabled(t.critic_trainable and torch.is_grad_enabled()):
                values = self.critic(ids, attn)
            head_hidden = out.head_hidden
        pos_labels, pos_mask = labels.index_select(0, pos_rows), mask.index_select(0, pos_rows)

        # Token weights from the correct rows' values, without gradient.
        ctx = WeightingContext(cfg=w, gamma=t.td_gamma, lam=t.td_lambda, stats=self.stats, training=training,
                               generator=self.generator if training else torch.Generator().manual_seed(0))
        inputs = WeightingInputs(mask=pos_mask, values=values.detach().index_select(0, pos_rows),
                                 rewards=rewards.index_select(0, pos_rows))
        weighting = WEIGHTINGS[w.scheme](inputs, ctx)
        weights = weighting.weights.to(head_hidden[0].dtype)
        result = weighted_policy_loss(model, head_hidden, pos_labels, weights, t.loss)
        metrics, sums = policy_metrics(result, weights, pos_mask, w.min_weight, w.max_weight)
        metrics.update({f"weight/{k}": v for k, v in weighting.metrics.items()})

        # Value loss: TD(lambda) targets with reward 1 (correct) / 0 (incorrect) on every row.
        # A frozen critic's values carry no graph, so its terms are plain diagnostics.
        loss = result.loss
        targets = lambda_returns(values, rewards, mask, t.td_gamma, t.td_lambda)
        value_loss = masked_mean((values - targets) ** 2, mask)
        metrics["value_loss"] = value_loss.detach()
        if critic_learns:
            loss = loss + t.value_coef * value_loss
        if n_pairs is not None:
            seq = sequence_mean(values, mask)
            pair_loss = bradley_terry_loss(seq[:n_pairs], seq[n_pairs:], t.pairwise_margin)
            metrics["pairwise_loss"] = pair_loss.detach()
            metrics.update(pairwise_stats(seq[:n_pairs].detach(), seq[n_pairs:].detach()))
            if critic_learns and t.use_pairwise:
                loss = loss + t.aux_coef * pair_loss
        metrics["loss"] = loss.detach()
        sums["value_loss"] = (value_loss.detach() * mask.sum(), mask.sum().float())
        return ObjectiveOutput(loss=loss, metrics=metrics, sums=sums, token_weights=TokenWeights(
            ids.index_select(0, pos_rows), pos_labels, weights.detach()))

    # ---- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        state = {"stats": self.stats.state_dict(), "generator": self.generator.get_state()}
        if self.critic is not None and self.t.critic_trainable:  # resume continues the same critic
            state["critic_value_head"] = {k: v.detach().cpu() for k, v in self.critic.value_head.state_dict().items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        self.stats.load_state_dict(state["stats"])
        self.generator.set_state(state["generator"])
        if "critic_value_head" in state and self.critic is not None:
            self.critic.value_head.load_state_dict(state["critic_value_head"])
