"""Greedy evaluation with self-speculative decoding (`wmtp eval --speculative auto|on|off`).

An MTP checkpoint's extra heads draft and head 1 verifies, so the completions are plain greedy
decoding's (batch size 1) token for token, in fewer LM passes. `auto` uses it when greedy
decoding is asked for (temperature 0) and the checkpoint has heads to draft with; `on` insists
(an error otherwise); `off` keeps batched generation. What it did is recorded in the summary:
passes, tokens per pass, acceptance by head, and on the first `check` prompts a plain
batch-1 greedy decode of the same model, timed, with the tokens compared, so the summary holds
a measured speed-up and an identity check rather than a promise.

How many drafts each pass verifies (`--speculative-drafts`, default 0: tuned) is measured on
the first prompts before the run (`eval.speculative.tune_drafts`): a longer draft is cheap on
some hardware and costly on other, and the far heads are right less often. The choice and the
tokens/s of every count are recorded; the tokens do not depend on it.

Speculative decoding runs one prompt at a time: it buys latency. Batched generation of many
prompts can have more throughput on the same machine; the summary's `generated_tokens_per_s`
tells which was faster for a given run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from weighted_mtp.errors import ConfigError
from weighted_mtp.eval.generate import (
    Generation,
    GenerationConfig,
    context_length,
    cut_at_stop,
    decode_new,
    encode_prompts,
    eos_token_ids,
)
from weighted_mtp.eval.speculative import acceptance_by_head, greedy_decode, self_speculative_greedy, tune_drafts
from weighted_mtp.models.load import saved_dtype
from weighted_mtp.models.mtp import MTPModel, MTP_CONFIG_FILE

SPECULATIVE_MODES = ("auto", "on", "off")


def saved_heads(checkpoint: Path) -> int:
    """Extra MTP heads a model directory holds (0 for a plain HF model)."""
    meta = Path(checkpoint) / MTP_CONFIG_FILE
    if not meta.is_file():
        return 0
    try:
        return max(0, int(json.loads(meta.read_text())["n_future_tokens"]) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def decide(mode: str, temperature: float, checkpoint: Path | None) -> tuple[bool, str]:
    """(use speculative decoding, why), or a ConfigError for `on` where it cannot be used."""
    if mode not in SPECULATIVE_MODES:
        raise ConfigError(f"--speculative must be one of {', '.join(SPECULATIVE_MODES)}, got {mode!r}")
    if mode == "off":
        return False, "--speculative off"
    heads = saved_heads(checkpoint) if checkpoint is not None else 0
    problem = ("sampling (temperature > 0): drafts are checked against greedy choices only" if temperature > 0
               else "the checkpoint has no extra MTP heads to draft with" if heads == 0 else None)
    if problem is None:
        return True, f"greedy decoding and {heads} extra heads"
    if mode == "on":
        raise ConfigError(f"--speculative on: {problem}")
    return False, problem


def load_mtp_model(checkpoint: Path):
    """The MTP model of an export, LoRA merged, in eval mode."""
    model = MTPModel.from_pretrained(checkpoint, dtype=torch.float32)
    model.merge_lora()
    return model.to(saved_dtype(checkpoint)).eval()


TUNE_PROMPTS, TUNE_TOKENS = 2, 64


def speculative_completions(model, tokenizer: Any, prompts: Sequence[str], cfg: GenerationConfig,
                            check: int = 2, drafts: int = 0) -> tuple[Generation, dict]:
    """Greedy completions of `prompts` (new text, stop sequences cut, as `generate_completions`
    returns them) by self-speculative decoding, and its statistics. `drafts`: drafts verified
    per pass (1..K-1), or 0 to measure which count is fastest on the first prompts."""
    if cfg.temperature != 0:
        raise ConfigError("speculative decoding is greedy: temperature must be 0")
    start = time.perf_counter()
    lm = model.lm
    eos = eos_token_ids(lm, tokenizer)
    ctx = context_length(lm.config)
    window = max((len(s.encode("utf-8")) for s in cfg.stop), default=0) + 4

    def stopped(new: list[int]) -> bool:
        if not cfg.stop:
            return False
        tail = tokenizer.decode(new[-window:], skip_special_tokens=True)
        return any(s in tail for s in cfg.stop)

    texts, n_new, accepted, offered = [], [], [], []
    check_spec = check_plain = 0.0
    check_tokens, identical = 0, True
    device = next(lm.parameters()).device
    encoded = encode_prompts(tokenizer, prompts)
    n_heads = model.n_future_tokens - 1
    if not 0 <= drafts <= n_heads:
        raise ConfigError(f"--speculative-drafts must be in [0, {n_heads}] for this checkpoint (0: tuned), got {drafts}")
    tuning = None
    if drafts == 0:
        tune_on = [torch.tensor([p], device=device) for p in encoded[:TUNE_PROMPTS]]
        longest = max((len(p) for p in encoded[:TUNE_PROMPTS]), default=0)
        budget = TUNE_TOKENS if ctx is None else min(TUNE_TOKENS, ctx - longest)
        tuning = tune_drafts(model, tune_on, max(1, budget), eos) if n_heads > 1 and tune_on else None
        drafts = tuning.drafts if tuning is not None else 1
    for i, prompt_ids in enumerate(encoded):
        limit = cfg.max_new_tokens if ctx is None else min(cfg.max_new_tokens, ctx - len(prompt_ids))
        ids = torch.tensor([prompt_ids], device=device)
        t0 = time.perf_counter()
        result = self_speculative_greedy(model, ids, limit, eos, max_drafts=drafts,
                                         should_stop=stopped if cfg.stop else None)
        spent = time.perf_counter() - t0
        new = result.tokens
        if i < check:  # the same decode token by token: identical tokens, and the speed-up
            t0 = time.perf_counter()
            plain = greedy_decode(model, ids, len(new), eos)
            check_plain += time.perf_counter() - t0
            check_spec += spent
            check_tokens += len(new)
            identical &= plain.tokens == new
        end = next((j for j, t in enumerate(new) if t in eos), len(new))
        texts.append(cut_at_stop(decode_new(tokenizer, prompt_ids, new[:end]), cfg.stop))
        n_new.append(len(new))
        accepted += result.accepted_per_step
        offered += result.drafts_per_step
    seconds = time.perf_counter() - start - check_plain
    by_head = [None if r is None else round(r, 4) for r in acceptance_by_head(accepted, offered, drafts)]
    passes = len(accepted) + len(prompts)
    stats = {
        "heads": n_heads, "head_type": model.head_type, "drafts": drafts,
        "drafts_tuned_tokens_per_s": None if tuning is None else {d: round(r, 2) for d, r in tuning.tokens_per_s.items()},
        "draft_vocab": None if model.draft_vocab is None else len(model.draft_vocab),
        "passes": passes, "tokens_per_pass": round(sum(n_new) / max(passes, 1), 3),
        "acceptance_by_head": by_head,
        "checked_prompts": min(check, len(prompts)), "identical_to_plain_greedy": identical,
        "speedup_vs_plain_greedy": round(check_plain / check_spec, 3) if check_spec > 0 else None,
    }
    return Generation(texts=texts, new_tokens=n_new, seconds=seconds, forward_passes=passes), stats
