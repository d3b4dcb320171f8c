"""Verifiable WMTP (stage 2): weight each response token of the MTP loss by the credit the
critic gives it, exp(whitened GAE advantage / beta), clipped.

Credit (`training.weighting.critic_credit`, see `weighting.advantage`): `value_delta` (default)
uses delta_t = V(s_t) - V(s_{t-1}) only, so it does not depend on the critic's level;
`terminal_reward` substitutes the 0/1 reward at the last token and is refused unless the critic's
values are probabilities (a BCE critic's logits are turned into probabilities; MSE and
lambda-return critics regress the 0/1 reward; a pairwise critic's level is arbitrary).

The policy learns from the correct side of (correct, incorrect) pairs (reward 1); the critic's
value targets use both sides, reward 1 and 0, and the value loss is (correct side + incorrect
side) / 2, each side a mean over its response tokens (seed 000). With `use_pairwise`, an auxiliary
Bradley-Terry loss ranks each pair's mean values. Total:

    policy + value_coef * value + aux_coef * pairwise

The critic is either a separate model (`critic_mode: separate`, the critic stage's export, in
eval mode, backbone frozen; with `critic_trainable` its value head keeps learning from the value
and pairwise terms, otherwise they are diagnostics without gradient) or a value head on the
policy trunk (`critic_mode: shared`, trained by the value and pairwise terms with the trunk). The
matched controls (`random_matched`, `shuffled`), `uniform` and `combined` (critic x Rho-1) run
through this same objective, so the only difference between arms is the weights. Validation reads
the correct side of validation pairs from problems unseen in training, as every arm does, and adds
the critic's held-out `pairwise_accuracy`, `pairwise_margin` and `value_loss`; it never updates
the whitening statistics or the training random stream."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from weighted_mtp.config.registry import register_objective
from weighted_mtp.config.schema import Config
from weighted_mtp.constants import IGNORE_INDEX
from weighted_mtp.errors import ConfigError
from weighted_mtp.losses.critic_losses import bradley_terry_loss, pairwise_stats
from weighted_mtp.models.critic import CRITIC_CONFIG_FILE, CriticModel
from weighted_mtp.models.load import load_policy, load_tokenizer
from weighted_mtp.models.mtp import MTPModel
from weighted_mtp.models.reference import check_same_tokenizer
from weighted_mtp.objectives.base import ObjectiveOutput, PolicyArmObjective, TokenWeights
from weighted_mtp.objectives.critic import CriticModelFields, CriticTrainingFields
from weighted_mtp.objectives.rho1 import ReferenceModelFields
from weighted_mtp.objectives.reference_ce import ReferenceCE
from weighted_mtp.objectives.rho1 import head1_ce
from weighted_mtp.objectives.weighted import policy_metrics, weighted_policy_loss
from weighted_mtp.rl.returns import lambda_returns, sequence_mean
from weighted_mtp.weighting import WEIGHTINGS, RunningMoments, WeightingContext, WeightingInputs
from weighted_mtp.weighting.config import WeightingFields

CRITIC_SCHEMES = ("critic", "random_matched", "shuffled", "uniform", "combined")


def side_value_loss(values: Tensor, targets: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(sum of squared errors, number of response tokens) per row, [B] each: the parts of a
    per-side token mean that validation can add up exactly over a split."""
    m = mask.to(values.dtype)
    return ((values - targets) ** 2 * m).sum(1), m.sum(1)


def _rows(batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor, int | None]:
    """(input_ids, attention_mask, labels, is_correct) over all rows, and the number of pairs
    (rows [:n] correct, [n:] incorrect) for pairwise batches, None for SFT batches."""
    if "pos_input_ids" in batch:
        n = batch["pos_input_ids"].shape[0]
        cat = {k: torch.cat([batch[f"pos_{k}"], batch[f"neg_{k}"]]) for k in ("input_ids", "attention_mask", "labels")}
        correct = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)]).to(cat["labels"].device)
        return cat["input_ids"], cat["attention_mask"], cat["labels"], correct, n
    return batch["input_ids"], batch["attention_mask"], batch["labels"], batch["is_correct"].bool(), None


def _policy_side(batch: dict[str, Any], ids: Tensor, labels: Tensor, pos_rows: Tensor,
                 length: int | None) -> dict[str, Any]:
    """The correct rows as a reference model reads them (with their cached ref_ce, if any)."""
    rows = {"input_ids": ids, "labels": labels}
    attn_key = "pos_attention_mask" if "pos_attention_mask" in batch else "attention_mask"
    rows["attention_mask"] = batch[attn_key].index_select(0, pos_rows)[:, :length]
    ref_key = "pos_ref_ce" if "pos_ref_ce" in batch else "ref_ce"
    if ref_key in batch:
        rows["ref_ce"] = batch[ref_key].index_select(0, pos_rows)[:, :length]
    return rows


@dataclass
class VerifiableTrainingFields:
    """The verifiable arm's `training.*` fields: which critic scores tokens and what it adds to the loss."""

    # separate: the critic at models.critic.path (a critic stage export) scores tokens;
    # shared: a value head on the policy trunk, trained jointly with the policy.
    critic_mode: Literal["separate", "shared"] = "separate"
    # separate critic: keep training its value head (backbone frozen) with the value and
    # pairwise terms on stage-2 pairs; false: a fully frozen critic.
    critic_trainable: bool = False
    # total = policy + value_coef * value + aux_coef * pairwise (the last two only train a shared
    # or critic_trainable critic; with a frozen critic they are logged).
    value_coef: float = 0.5
    use_pairwise: bool = False
    aux_coef: float = 0.1


@register_objective(
    "verifiable", training=(CriticTrainingFields, VerifiableTrainingFields, WeightingFields),
    models=(CriticModelFields, ReferenceModelFields))
class VerifiableObjective(PolicyArmObjective):
    applies_token_weights = True

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        t = cfg.training
        self.t, self.w = t, t.weighting
        if self.w.scheme not in CRITIC_SCHEMES:
            raise ConfigError(f"config key 'training.weighting.scheme': stage verifiable supports "
                              f"{', '.join(CRITIC_SCHEMES)}, got {self.w.scheme!r} (rho1 is its own stage)")
        if t.use_pairwise and self.batch_kind != "pairwise":
            raise ConfigError("config key 'training.use_pairwise': the ranking loss needs (correct, incorrect) "
                              "pairs; set data_sampling.policy_data=pairs")
        if t.critic_mode == "separate" and not cfg.models.critic.path:
            raise ConfigError("config key 'models.critic.path': critic_mode separate needs a trained critic "
                              "directory (the critic stage's final/); or set training.critic_mode=shared")
        self.stats = RunningMoments(self.w.stats_momentum, self.w.stats_warmup_steps)
        self.generator = torch.Generator().manual_seed(cfg.runtime.seed)
        self.critic: CriticModel | None = None
        self.reference = ReferenceCE(cfg) if self.w.scheme == "combined" else None

    # ---- models ------------------------------------------------------------------------------

    def build_model(self) -> tuple[MTPModel, Any, Path]:
        model, tokenizer, path = load_policy(self.cfg)
        if self.t.critic_mode == "shared":
            model.attach_value_head(self.t.value_head_type, self.t.dropout)
        else:
            self._load_critic(tokenizer, path)
        if self.reference is not None:
            self.reference.check_tokenizer(tokenizer, path)
        return model, tokenizer, path

    def load_model(self, directory: Path) -> MTPModel:
        model = super().load_model(directory)
        if self.t.critic_mode == "shared" and model.value_head is None:
            raise ConfigError(f"{directory}: checkpoint has no value head but training.critic_mode is shared")
        if self.t.critic_mode == "separate":
            self._load_critic(load_tokenizer(directory), directory)
        if self.reference is not None:
            self.reference.check_tokenizer(load_tokenizer(directory), directory)
        return model

    def _load_critic(self, policy_tokenizer, policy_path: Path) -> None:
        path = Path(self.cfg.models.critic.path).expanduser()
        if not (path / CRITIC_CONFIG_FILE).is_file():
            raise ConfigError(f"config key 'models.critic.path': {path} is not a critic export "
                              f"(no {CRITIC_CONFIG_FILE}); train one with configs/critic/*.yaml")
        check_same_tokenizer(policy_tokenizer, load_tokenizer(path), policy_path, path)
        critic = CriticModel.from_pretrained(path)
        if self.w.critic_credit == "terminal_reward" and not critic.values_are_probabilities:
            trained = critic.training_loss or "an unrecorded loss"
            raise ConfigError(f"config key 'training.weighting.critic_credit': terminal_reward mixes the 0/1 reward "
                              f"with the values, but {path} was trained with {trained}, whose values are not "
                              f"probabilities; use critic_credit=value_delta or a bce/mse/lambda_return critic")
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
        mask = labels != IGNORE_INDEX
        rewards = correct.float()
        shared = t.critic_mode == "shared"
        critic_learns = shared or t.critic_trainable
        pos_rows = correct.nonzero().squeeze(-1) if n_pairs is None else torch.arange(n_pairs, device=ids.device)
        # The policy side: correct rows, cut to their own longest row (a pairwise batch pads both
        # sides to a common length).
        length = batch.get("pos_length") if n_pairs is not None else None

        if shared:  # one forward over every row: the value head needs the incorrect ones too
            out = model(ids, attn)
            values = model.values(out)
            head_hidden = [h.index_select(0, pos_rows)[:, :length] for h in out.head_hidden]
        else:
            out = model(ids.index_select(0, pos_rows)[:, :length], attn.index_select(0, pos_rows)[:, :length])
            with torch.set_grad_enabled(t.critic_trainable and torch.is_grad_enabled()):
                values = self.critic.credit_values(self.critic(ids, attn))
            head_hidden = out.head_hidden
        pos_ids = ids.index_select(0, pos_rows)[:, :length]
        pos_labels, pos_mask = labels.index_select(0, pos_rows)[:, :length], mask.index_select(0, pos_rows)[:, :length]
        pos_values = values.detach().index_select(0, pos_rows)[:, :length]

        # Token weights from the correct rows' values, without gradient.
        ctx = WeightingContext(cfg=w, gamma=t.td_gamma, lam=t.td_lambda, stats=self.stats, training=training,
                               generator=self.generator if training else torch.Generator().manual_seed(0))
        inputs = WeightingInputs(mask=pos_mask, values=pos_values, rewards=rewards.index_select(0, pos_rows))
        if self.reference is not None:  # combined: the Rho-1 half of the weight
            inputs.policy_ce = head1_ce(model, head_hidden, pos_labels, t.loss.chunk_size)
            inputs.reference_ce = self.reference(_policy_side(batch, pos_ids, pos_labels, pos_rows, length))
        weighting = WEIGHTINGS[w.scheme](inputs, ctx)
        weights = weighting.weights.to(head_hidden[0].dtype)
        result = weighted_policy_loss(model, head_hidden, pos_labels, weights, t.loss)
        metrics, sums = policy_metrics(result, weights, pos_mask, w.min_weight, w.max_weight)
        metrics.update({f"weight/{k}": v for k, v in weighting.metrics.items()})

        # Value loss: TD(lambda) targets with reward 1 (correct) / 0 (incorrect) on every row,
        # a token mean per side, then (correct + incorrect) / 2. A frozen critic's values carry
        # no graph, so its terms are plain diagnostics.
        loss = result.loss
        targets = lambda_returns(values, rewards, mask, t.td_gamma, t.td_lambda)
        sq, n_tok = side_value_loss(values, targets, mask)
        sides = [correct, ~correct] if n_pairs is not None else [torch.ones_like(correct)]
        side_means = [sq[s].sum() / n_tok[s].sum().clamp(min=1) for s in sides]
        value_loss = torch.stack(side_means).mean()
        metrics["value_loss"] = value_loss.detach()
        if critic_learns:
            loss = loss + t.value_coef * value_loss
        samples = {}
        if n_pairs is not None:
            seq = sequence_mean(values, mask)
            pair_loss = bradley_terry_loss(seq[:n_pairs], seq[n_pairs:], t.pairwise_margin)
            metrics["pairwise_loss"] = pair_loss.detach()
            metrics.update(pairwise_stats(seq[:n_pairs].detach(), seq[n_pairs:].detach()))
            if critic_learns and t.use_pairwise:
                loss = loss + t.aux_coef * pair_loss
            if not training:  # per pair, for exact split-level numbers (validation_metrics)
                samples = {"seq_pos": seq[:n_pairs].detach(), "seq_neg": seq[n_pairs:].detach(),
                           "sq_pos": sq[:n_pairs].detach(), "n_pos": n_tok[:n_pairs].detach(),
                           "sq_neg": sq[n_pairs:].detach(), "n_neg": n_tok[n_pairs:].detach()}
        metrics["loss"] = loss.detach()
        return ObjectiveOutput(loss=loss, metrics=metrics, sums=sums, samples=samples,
                               token_weights=TokenWeights(pos_ids, pos_labels, weights.detach()))

    def validation_metrics(self, samples: dict[str, Tensor], reference: dict[str, Tensor] | None) -> dict[str, float]:
        """The critic on held-out pairs: pairwise accuracy (ties count half), margin (mean
        V(correct) - mean V(incorrect) of sequence-mean values) and the value loss as training
        computes it, (correct side + incorrect side) / 2, each a token mean over the whole split."""
        if "seq_pos" not in samples:
            return {}
        p, n = samples["seq_pos"].double(), samples["seq_neg"].double()
        accuracy = ((p > n).double() + 0.5 * (p == n).double()).mean()
        pos = samples["sq_pos"].double().sum() / samples["n_pos"].double().sum().clamp(min=1)
        neg = samples["sq_neg"].double().sum() / samples["n_neg"].double().sum().clamp(min=1)
        return {"pairwise_accuracy": float(accuracy), "pairwise_margin": float(p.mean() - n.mean()),
                "value_loss": float((pos + neg) / 2)}

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
