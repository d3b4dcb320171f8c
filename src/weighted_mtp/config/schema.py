"""The typed config schema every method shares. Every key a YAML file may set is a field here or
in a method's registered config (`config/registry.py`: the `clara:` / `steper:` / `mtp_heads:`
sections, the critic's and the weighting's `training.*` fields, `models.critic` /
`models.reference`), and every field is read somewhere: any other key is an error (see
`load.py`), so a typo can never silently fall back to a default. Key names follow the seeds'
configs (`models.policy.*`, `dataset.*`, `data_sampling.*`, `training.*`, `checkpoint.*`,
`runtime.*`, `mlflow.*`)."""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Any, Literal, Optional

from weighted_mtp.config.registry import METHOD_FIELDS, SECTIONS


@dataclass
class ExperimentConfig:
    name: str = "default"
    # The objective the one training loop runs (registered in `weighted_mtp.config.registry.OBJECTIVES`).
    stage: str = "baseline"
    description: str = ""
    tags: list[str] = field(default_factory=list)


@dataclass
class PolicyModelConfig:
    # A local HF model directory (plain HF or an MTP export), or `embedded:micro-llama`, the
    # Llama-style micro model built locally from a config on first use.
    path: str = "embedded:micro-llama"
    # Defaults to `path`.
    tokenizer_path: Optional[str] = None
    name: str = ""
    # K: head 1 is the LM's own last block; heads 2..K are extra heads (`head_type`).
    n_future_tokens: int = 4
    # parallel: heads 2..K are copies of the last block, all reading the trunk (Meta, Gloeckle
    # et al. 2024). sequential: head k+1 reads head k's output and the embedding of token t+k
    # through two norms, a 2D -> D projection and one block (DeepSeek-V3; transformers' MtpModel
    # layout, see `models.sequential_heads`).
    head_type: Literal["parallel", "sequential"] = "parallel"
    # Parameter dtype at load time. Mixed precision is `training.mixed_precision`.
    dtype: Literal["float32", "bfloat16"] = "float32"


@dataclass
class AuxModelConfig:
    """A model a method reads beside the policy (`models.critic`, `models.reference`): a local
    directory, or None where the method allows it, and its parameter dtype at load time."""

    path: Optional[str] = None
    dtype: Literal["float32", "bfloat16"] = "float32"


@dataclass
class ModelsConfig:
    """`models:`: the policy every method trains. Methods add theirs (`models.critic`,
    `models.reference`) through the registry (`with_method_fields`)."""

    policy: PolicyModelConfig = field(default_factory=PolicyModelConfig)


@dataclass
class EmbeddedDataConfig:
    seed: int = 0
    n_problems: int = 2000


@dataclass
class DatasetConfig:
    name: str = "embedded"
    # A JSONL file in the processed schema, or `embedded:<split>` (train/valid/test).
    train: str = "embedded:train"
    validation: str = "embedded:valid"
    max_length: int = 512
    # Batches are padded to their longest row, rounded up to this multiple (None: no rounding).
    # Fewer distinct shapes make bf16 on CPU (oneDNN) and GPU kernels faster.
    pad_to_multiple_of: Optional[int] = None
    embedded: EmbeddedDataConfig = field(default_factory=EmbeddedDataConfig)


@dataclass
class CurriculumStage:
    # Training progress in (0, 1] up to which these difficulty weights apply.
    until: float = 1.0
    weights: dict[str, float] = field(default_factory=dict)


@dataclass
class PairSamplingConfig:
    # Pairs to train / validate on; None means data_sampling.n_samples / val_n_samples.
    n_pairs: Optional[int] = None
    val_n_pairs: Optional[int] = None


@dataclass
class DataSamplingConfig:
    seed: int = 42
    n_samples: int = 2000
    val_n_samples: int = 200
    # SFT objectives train on correct solutions only.
    correct_only: bool = True
    # Fraction of correct rows when not correct_only (None keeps the file's natural mix).
    correct_ratio: Optional[float] = None
    # Inclusive [lo, hi] difficulty ranges and their sampling weights.
    difficulty_bins: dict[str, list[int]] = field(default_factory=lambda: {"all": [0, 1000]})
    difficulty_weights: dict[str, float] = field(default_factory=lambda: {"all": 1.0})
    curriculum: list[CurriculumStage] = field(default_factory=list)
    # Pair sampling, for objectives whose batches are (correct, incorrect) pairs.
    pairwise: PairSamplingConfig = field(default_factory=lambda: PairSamplingConfig())
    max_pairs_per_problem: int = 8
    # one_to_one: each solution in at most one pair (a problem's correct and incorrect solutions
    # zipped after shuffling); all_combinations: every (correct, incorrect) product of a problem
    # (seed 001), then capped by max_pairs_per_problem.
    pairing: Literal["one_to_one", "all_combinations"] = "one_to_one"
    # What the policy arms (baseline, verifiable and its controls, rho1) train and validate on.
    # pairs: the correct side of (correct, incorrect) pairs, so every arm sees the same rows in
    # the same order (the critic arm needs the incorrect side for its value and ranking terms);
    # rows: correct rows sampled on their own (data_sampling.n_samples / val_n_samples).
    policy_data: Literal["pairs", "rows"] = "rows"
    length_bins: Optional[list[int]] = None
    # Asking for more rows/pairs than exist: false uses what exists (and says so), true fails.
    strict: bool = False
    # Also evaluate on this many training items at each validation, for train-minus-validation gaps.
    train_eval_n_samples: int = 0


@dataclass
class LRSchedulerConfig:
    type: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.1


@dataclass
class LossConfig:
    # token_mean: sum(w * CE) / n_targets per head; weight_mean: sum(w * CE) / sum(w) per head.
    normalization: Literal["token_mean", "weight_mean"] = "token_mean"
    # Rows per fused unembedding + CE chunk: the largest logits tensor is [chunk_size, vocab].
    chunk_size: int = 1024
    # Per-head loss scales s_1..s_K: loss = sum_k s_k L_k (each L_k normalised by its own
    # targets). null: the mean over heads. DeepSeek-V3 with K = 2: [1.0, 0.3] early, [1.0, 0.1]
    # later. A 0 skips that head's CE entirely (e.g. a frozen head 1 in stage mtp_heads).
    head_scales: Optional[list[float]] = None


@dataclass
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    # None: every attention and MLP projection of the architecture.
    target_modules: Optional[list[str]] = None


@dataclass
class TrainingConfig:
    """The `training:` fields every method reads. Methods add their own under `training:`
    (`register_objective(..., training=...)`: the critic's loss, the verifiable arm's critic
    use, the weighting); `with_method_fields(TrainingConfig)` is this class with all of them."""

    n_epochs: float = 1.0
    # When set, overrides n_epochs.
    max_steps: Optional[int] = None
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1.0e-3
    # Per-group learning rates; None means `learning_rate`.
    trunk_learning_rate: Optional[float] = None
    heads_learning_rate: Optional[float] = None
    value_head_learning_rate: Optional[float] = None
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    max_grad_norm: float = 1.0
    lr_scheduler: LRSchedulerConfig = field(default_factory=LRSchedulerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    mixed_precision: Literal["fp32", "bf16"] = "fp32"
    # torch.compile the decoder blocks (trunk and MTP heads; the fused loss stays eager). The
    # first steps pay the compile (tens of seconds on CPU), later ones run faster.
    compile: bool = False
    # Optimizer steps between logging events.
    log_interval: int = 10
    # Validation every this fraction of an epoch (0 disables periodic validation; the end of
    # training always validates).
    eval_every: float = 0.25
    # Batch size for validation (defaults to batch_size).
    eval_batch_size: Optional[int] = None
    # Critic: LoRA on the backbone. Policy stages: LoRA on the trunk and every MTP head, base frozen.
    use_lora: bool = False
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    objective_learning_rate: Optional[float] = None


_COMPOSED: dict[tuple, type] = {}
_ROOTS = {"training": TrainingConfig, "models": ModelsConfig}


def with_method_fields(base: type) -> type:
    """TrainingConfig / ModelsConfig plus every registered method's fields under that section, so
    the keys YAML files write (`training.td_lambda`, `models.critic.path`) stay where they were
    while the methods own them. Built once per set of registered field classes."""
    root = next(name for name, cls in _ROOTS.items() if cls is base)
    extra = tuple(METHOD_FIELDS[root])
    if (base, extra) not in _COMPOSED:
        # Bases in this order put the base's fields first, then each method's in registration order.
        cls = make_dataclass(base.__name__, [], bases=(*reversed(extra), base))
        cls.__doc__, cls.__module__ = base.__doc__, __name__
        _COMPOSED[(base, extra)] = cls
    return _COMPOSED[(base, extra)]


@dataclass
class CheckpointConfig:
    # Save every this fraction of an epoch (0 disables periodic checkpoints).
    save_checkpoint_every: float = 0.5
    save_total_limit: int = 2
    save_best: bool = True
    best_metric: str = "val/loss"
    best_mode: Literal["min", "max"] = "min"
    save_final: bool = True


@dataclass
class RuntimeConfig:
    device: str = "auto"
    seed: int = 42
    # torch intra-op threads (None keeps torch's default).
    num_threads: Optional[int] = None


@dataclass
class MLflowConfig:
    enabled: bool = True
    # None: a local sqlite store inside the run directory.
    tracking_uri: Optional[str] = None
    experiment: str = "weighted-mtp"


@dataclass
class DistributedConfig:
    # Used when launched with several processes (`torchrun --nproc_per_node N -m weighted_mtp
    # train` or `wmtp train --nproc N`); one process ignores it. ddp: a full model per process;
    # fsdp2: parameters, gradients and optimizer state sharded (`fully_shard` per decoder block).
    strategy: Literal["ddp", "fsdp2"] = "ddp"
    # Recompute each decoder block's activations in backward instead of storing them.
    activation_checkpointing: bool = False
    # Seconds a collective may wait for the other processes before the run fails.
    timeout_s: int = 1800


@dataclass
class Config:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    models: ModelsConfig = field(default_factory=lambda: with_method_fields(ModelsConfig)())
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    data_sampling: DataSamplingConfig = field(default_factory=DataSamplingConfig)
    training: TrainingConfig = field(default_factory=lambda: with_method_fields(TrainingConfig)())
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    # The sections methods own (`clara`, `steper`, `mtp_heads`, ...: `config.registry.SECTIONS`),
    # by name; read as attributes (`cfg.clara.top_k`), written to YAML at the top level.
    sections: dict[str, Any] = field(default_factory=dict, metadata={"yaml": False})

    def __post_init__(self):
        for name, cls in SECTIONS.items():
            if name not in self.sections:
                self.sections[name] = cls()

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"config has no key or section '{name}'")
