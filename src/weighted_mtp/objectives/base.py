"""The contract between the one training loop and a method: an objective turns a batch into a
loss plus metrics. Methods differ only here and in their YAML config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor, nn

from weighted_mtp.config.schema import Config
from weighted_mtp.models.mtp import MTPModel


@dataclass
class ObjectiveOutput:
    """loss: scalar to backpropagate. metrics: detached scalars (averaged by the loop over the log
    interval). sums: detached (numerator, denominator) pairs that validation aggregates exactly,
    e.g. per-head CE weighted by its token count. n_tokens: target tokens in the batch."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)
    sums: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    n_tokens: int = 0


class Objective(Protocol):
    # "sft" batches carry input_ids/attention_mask/labels; "pairwise" batches pos_*/neg_*.
    batch_kind: str

    def __call__(self, model: MTPModel, batch: dict[str, Any], *, training: bool) -> ObjectiveOutput: ...

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters owned by the objective (e.g. learned loss weights)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class StatelessObjective:
    """Default plumbing for objectives with no state and no parameters of their own."""

    batch_kind = "sft"

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def extra_parameters(self) -> list[nn.Parameter]:
        return []

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
