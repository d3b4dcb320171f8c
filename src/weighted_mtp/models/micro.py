"""The embedded default model: a Llama-style micro model built from a config and a byte-level BPE
tokenizer trained on the embedded corpus. Both are built on first use into a cache directory,
deterministically from a seed, so the whole project runs with no model hub and no download."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

import torch

from weighted_mtp.cache import cache_root, embedded_data_dir
from weighted_mtp.data.embedded.build import build_embedded_dataset, corpus_texts
from weighted_mtp.files import building_cache_dir

MICRO_SPEC = "embedded:micro-llama"
MICRO_VERSION = 1
BOS, EOS, PAD = "<s>", "</s>", "<pad>"

MICRO_LLAMA = dict(
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE (any byte sequence round-trips) with BOS added by a post-processor, as
    transformers 5 tokenizers add no BOS without one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def _build(out_dir: Path, texts: Iterable[str], seed: int, vocab_size: int, arch: dict = MICRO_LLAMA) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(texts, vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **arch,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def ensure_micro_model(seed: int = 0, vocab_size: int = 4096, data_seed: int = 0, n_problems: int = 2000) -> Path:
    """Returns the cached micro model directory, building it (and the embedded data it trains its
    tokenizer on) if missing."""
    data_dir = embedded_data_dir(data_seed, n_problems)
    build_embedded_dataset(data_dir, seed=data_seed, n_problems=n_problems)
    key = {"v": MICRO_VERSION, "arch": MICRO_LLAMA, "seed": seed, "vocab": vocab_size,
           "data": json.loads((data_dir / "manifest.json").read_text())}
    return ensure_built_model("micro-llama", key, lambda: corpus_texts(data_dir), seed, vocab_size, MICRO_LLAMA)


def ensure_built_model(name: str, key: dict, texts, seed: int, vocab_size: int, arch: dict) -> Path:
    """A Llama of `arch` with a tokenizer trained on `texts()`, cached under a digest of `key`.
    The directory is written under a temporary name and renamed, so an interrupted build never
    leaves a half-written model behind."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    out = cache_root() / "models" / f"{name}-{digest}"
    if (out / "config.json").is_file():
        return out
    with building_cache_dir(out, lambda d: (d / "config.json").is_file()) as tmp:
        _build(tmp, texts(), seed, vocab_size, arch)
    return out
