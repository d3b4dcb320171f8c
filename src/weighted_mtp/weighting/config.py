"""The `training.weighting` config of the weighted arms (verifiable and its controls, Rho-1), and
the field that puts it under `training:` (registered by those objectives)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class WeightingConfig:
    # How each target token of the MTP loss is weighted (see `weighted_mtp.weighting`):
    # uniform | critic (exp of the whitened GAE advantage) | rho1 (excess loss against a
    # reference) | random_matched / shuffled (controls with the critic weights' statistics).
    # combined (critic weight x rho1 weight, renormalised to mean 1 over the batch's response tokens).
    scheme: Literal["uniform", "critic", "rho1", "random_matched", "shuffled", "combined"] = "uniform"
    # Credit of token t from the critic's values (see `weighting.advantage`).
    # value_delta: delta_t = V(s_t) - V(s_{t-1}), the pure value difference, unchanged when a
    # constant is added to every value (a pairwise critic's level is arbitrary);
    # terminal_reward: gamma V(s_t) - V(s_{t-1}) with R - V(s_{T-1}) on the last token, which
    # mixes the 0/1 reward with the values, so it needs a critic whose values are probabilities.
    critic_credit: Literal["value_delta", "terminal_reward"] = "value_delta"
    # critic: w = clip(exp(A_hat / beta), min_weight, max_weight).
    beta: float = 1.0
    min_weight: float = 0.1
    max_weight: float = 3.0
    # Whiten advantages with running statistics that only training batches update.
    whiten: bool = True
    stats_momentum: float = 0.1
    stats_warmup_steps: int = 10
    # rho1: excess = CE_policy - CE_reference (signed) or its absolute value.
    rho1_mode: Literal["signed", "absolute"] = "signed"
    # topk: keep the top rho1_k_percent of response tokens of the batch (0/1 weights);
    # soft: w = N * softmax(excess / rho1_temperature) over the batch's response tokens.
    rho1_selection: Literal["topk", "soft"] = "topk"
    rho1_k_percent: float = 0.7
    rho1_temperature: float = 1.0


@dataclass
class WeightingFields:
    # Weighted policy training (stages: verifiable, rho1).
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
