"""Resolve `models.policy` into an MTPModel and its tokenizer: the embedded micro model, or any
local HF causal-LM directory (plain or an MTP export). No model hub is ever contacted."""

from __future__ import annotations

from pathlib import Path

import torch

from weighted_mtp.config.schema import Config, PolicyModelConfig
from weighted_mtp.errors import ConfigError
from weighted_mtp.models.micro import MICRO_SPEC, ensure_micro_model
from weighted_mtp.models.mtp import MTPModel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_model_path(spec: str, cfg: Config | None = None) -> Path:
    if spec == MICRO_SPEC:
        # The micro model is a fixed starting point (init seed 0) whose tokenizer is trained on
        # the embedded corpus the config names; runtime.seed varies the run, not the base model.
        emb = cfg.dataset.embedded if cfg is not None else None
        return ensure_micro_model(data_seed=emb.seed if emb else 0, n_problems=emb.n_problems if emb else 2000)
    if spec.startswith("embedded:"):
        raise ConfigError(f"config key 'models.policy.path': unknown embedded model '{spec}' (known: {MICRO_SPEC})")
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"config key 'models.policy.path': {spec} is not a local HF model directory (no config.json); "
            "model hub names are not downloaded at run time"
        )
    return path


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"{path}: tokenizer has no EOS token; responses must end with one")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_policy(cfg: Config, policy: PolicyModelConfig | None = None) -> tuple[MTPModel, object, Path]:
    policy = policy or cfg.models.policy
    path = resolve_model_path(policy.path, cfg)
    tok_path = resolve_model_path(policy.tokenizer_path, cfg) if policy.tokenizer_path else path
    model = MTPModel.from_pretrained(path, n_future_tokens=policy.n_future_tokens, dtype=DTYPES[policy.dtype])
    return model, load_tokenizer(tok_path), path
