"""The contract between the one training loop and a method: an objective says which model it
trains, turns a batch into a loss plus metrics, and summarises whole-split validation. Methods
differ only here and in their YAML config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor, nn

from weighted_mtp.config.schema import Config
from weighted_mtp.data.collate import PairwiseCollator, SFTCollator
from weighted_mtp.errors import ConfigError
from weighted_mtp.models.load import DTYPES, load_policy
from weighted_mtp.models.mtp import MTPModel


@dataclass
class TokenWeights:
    """The per-token weights an objective applied, for inspection (reports, heat maps):
    rows of the batch the policy loss saw, weights indexed by target token (0 off-target)."""

    input_ids: Tensor  # [B, S]
    labels: Tensor  # [B, S], -100 where no loss
    weights: Tensor  # [B, S] float, detached


@dataclass
class ObjectiveOutput:
    """loss: scalar to backpropagate. metrics: detached scalars (averaged by the loop over the log
    interval). sums: detached (numerator, denominator) pairs that validation aggregates exactly,
    e.g. per-head CE weighted by its token count. samples: detached per-sample tensors (e.g. a
    critic's sequence values and labels) that validation concatenates over the split and hands
    to `validation_metrics`, for metrics that do not decompose over batches (AUC, F1)."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)
    sums: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    samples: dict[str, Tensor] = field(default_factory=dict)
    token_weights: TokenWeights | None = None  # weighted objectives only


class Objective(Protocol):
    # Batch kind of training and of validation: "sft" batches carry input_ids / attention_mask /
    # labels, "pairwise" batches pos_* / neg_* (a correct and an incorrect solution of a problem).
    batch_kind: str
    val_batch_kind: str
    # What the loss is a mean over, for combining processes' losses exactly: "tokens", "rows" or
    # "policy_tokens" (see `training.distributed.loss_units`); None: by batch kind.
    loss_units: str | None
    # True: the objective reads its own data (`load_items`) instead of the processed Record files.
    own_data: bool
    # True: the objective weights target tokens and returns them (`ObjectiveOutput.token_weights`),
    # so reports draw them.
    applies_token_weights: bool

    def build_model(self) -> tuple[nn.Module, Any, Path]:
        """(model, tokenizer, where the model came from) for a fresh run."""
        ...

    def load_model(self, directory: Path) -> nn.Module:
        """The model saved by a checkpoint of this objective (for --resume)."""
        ...

    def __call__(self, model: nn.Module, batch: dict[str, Any], *, training: bool) -> ObjectiveOutput: ...

    def validation_metrics(self, samples: dict[str, Tensor], reference: dict[str, Tensor] | None) -> dict[str, float]:
        """Metrics over a whole split's samples; `reference` holds the training-split samples of
        the same evaluation (when evaluated), e.g. to calibrate a threshold on training data."""
        ...

    def extra_parameters(self) -> list:
        """Trainable parameters owned by the objective (e.g. learned loss weights), each a
        Parameter (the objective's own LR group) or a (group, Parameter) pair, e.g.
        ("value_head", p) for a separate critic's head that keeps training."""
        ...

    def to(self, device) -> None:
        """Move models the objective holds besides the trained one (a critic, a reference)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def load_items(self, which: str) -> tuple[Path, list]:
        """With `own_data`: (source file, items) of "train" or "validation" (CLaRa's JSONL formats);
        the loop shuffles and batches them. Errors name the file and line."""
        ...

    def make_collator(self, tokenizer, which: str):
        """items of `which` ("train" / "validation") -> batch dict of tensors (keys ending in
        `attention_mask` are counted as tokens)."""
        ...


class ObjectiveDefaults:
    """The parts of the contract most objectives leave as they are: Record data collated by batch
    kind, no split-level metrics, no parameters or extra models of their own, no state. An
    objective keeps its config as `self.cfg`."""

    loss_units: str | None = None
    own_data = False
    applies_token_weights = False

    def load_items(self, which: str) -> tuple[Path, list]:
        raise NotImplementedError(f"{type(self).__name__} reads Record files (own_data is false)")

    def make_collator(self, tokenizer, which: str):
        kind = self.batch_kind if which == "train" else self.val_batch_kind
        cls = PairwiseCollator if kind == "pairwise" else SFTCollator
        return cls(tokenizer, self.cfg.dataset.max_length, self.cfg.dataset.pad_to_multiple_of)

    def validation_metrics(self, samples: dict[str, Tensor], reference: dict[str, Tensor] | None) -> dict[str, float]:
        return {}

    def extra_parameters(self) -> list:
        return []

    def to(self, device) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def policy_rows(batch: dict[str, Any]) -> dict[str, Any]:
    """The rows the policy loss trains on: an SFT batch as it is, or the correct side of a
    pairwise batch (``pos_*``) cut to its own longest row (both sides were padded to a common
    length, and the padding columns would cost forward time for nothing)."""
    if "pos_input_ids" not in batch:
        return batch
    length = batch.get("pos_length")
    if length is None:
        length = int(batch["pos_attention_mask"].sum(1).max())
    rows = {k[4:]: v[:, :length] for k, v in batch.items()
            if k.startswith("pos_") and isinstance(v, Tensor) and v.dim() == 2}
    if "pos_task_ids" in batch:
        rows["task_ids"] = batch["pos_task_ids"]
    return rows


class PolicyObjective(ObjectiveDefaults):
    """Default plumbing for objectives that train the MTP policy and keep no state of their own."""

    batch_kind = "sft"
    val_batch_kind = "sft"

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def build_model(self) -> tuple[nn.Module, Any, Path]:
        return load_policy(self.cfg)

    def load_model(self, directory: Path) -> nn.Module:
        policy = self.cfg.models.policy
        model = MTPModel.from_pretrained(directory, n_future_tokens=policy.n_future_tokens, dtype=DTYPES[policy.dtype],
                                         head_type=policy.head_type)
        if (model.lora is not None) != self.cfg.training.use_lora:
            raise ConfigError(f"{directory}: the checkpoint {'has' if model.lora else 'has no'} LoRA adapters but "
                              f"training.use_lora is {str(self.cfg.training.use_lora).lower()}")
        return model


class PolicyArmObjective(PolicyObjective):
    """An arm of the weighting comparison (uniform baseline, critic and its controls, Rho-1).

    Every arm reads its batches the same way (`data_sampling.policy_data`): with `pairs` the loop
    hands it (correct, incorrect) pairs and the policy trains on the correct side (`policy_rows`),
    so all arms see the same rows in the same order (the critic arm needs the incorrect side for
    its value and ranking terms); validation reads the correct side of validation pairs likewise.
    Distributed losses combine by the policy's target tokens."""

    loss_units = "policy_tokens"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        kind = "pairwise" if cfg.data_sampling.policy_data == "pairs" else "sft"
        self.batch_kind = self.val_batch_kind = kind
