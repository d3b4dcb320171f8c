"""Helpers shared by tests/test_distributed.py and tests/test_faults.py: a tiny LM with the micro
model's tokenizer (fast enough for several short training runs as subprocesses) and the
environment those subprocesses run in."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from conftest import REPO


def tiny_lm_dir(root: Path, tokenizer_dir: Path) -> Path:
    """A 2-block Llama (hidden 64, tied embeddings) with the micro model's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from weighted_mtp.models.load import load_tokenizer

    out = root / "tiny-llama"
    if (out / "config.json").is_file():
        return out
    tok = load_tokenizer(tokenizer_dir)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                          tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    finally:
        torch.random.set_rng_state(generator_state)
    lm.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def child_env(**extra: str) -> dict:
    """One thread per process (2 shared cores), offline, this checkout importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def logged(run_dir: Path, prefix: str) -> dict[int, dict[str, float]]:
    """metrics.jsonl as {step: {name: value}} for names starting with `prefix` (a line being
    written by a live process is skipped)."""
    out: dict[int, dict[str, float]] = {}
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        values = {k: v for k, v in event.items() if k.startswith(prefix)}
        if values:
            out.setdefault(event["step"], {}).update(values)
    return out


def in_process_train(cfg, run_dir: Path, **kwargs):
    """`train()` in the test process, restoring the thread count the config may change."""
    from weighted_mtp.training.loop import train

    threads = torch.get_num_threads()
    try:
        return train(cfg, run_dir, show_progress=False, **kwargs)
    finally:
        torch.set_num_threads(threads)
