"""Batched text generation for evaluation: any HF causal LM, or an MTPModel through head 1.

Prompts are encoded the way training encodes them (text tokenized with
``add_special_tokens=False`` after ``special_prefix(tokenizer)``), left-padded by hand (the
tokenizer's own padding side is never touched) and decoded with HF ``generate`` and its KV
cache. A row stops at EOS (the tokenizer's and any in the model's generation config), at a stop
sequence (checked on the decoded tail of each row's new tokens, so rows stop early; the stop
sequence and everything after it is cut from the returned text) or when it reaches the model's
context (such a row is generated on its own, so no row of a batch ever runs past the context).
Only the new text is returned; prompts keep their order (no length sorting).

Sampling is reproducible: batch ``b`` runs under a seed derived from ``(cfg.seed, b)`` inside a
forked RNG, so a batch's samples do not depend on which batches ran before it and the caller's
global RNG is left alone. (Samples do depend on the batch's composition: rows of one batch
share the RNG stream.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from weighted_mtp.data.collate import pad_token_id, special_prefix
from weighted_mtp.errors import WMTPError

_CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


@dataclass
class GenerationConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    stop: Sequence[str] = ()
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise WMTPError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise WMTPError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise WMTPError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.batch_size < 1:
            raise WMTPError(f"batch_size must be >= 1, got {self.batch_size}")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        if any(not s for s in self.stop):
            raise WMTPError("stop sequences must be non-empty strings")
        self.stop = tuple(self.stop)


def causal_lm(model: nn.Module) -> nn.Module:
    """The HF causal LM to decode with: an MTPModel's head 1 (`.lm`), or the model itself."""
    from weighted_mtp.models.mtp import MTPModel

    return model.lm if isinstance(model, MTPModel) else model


def context_length(config: Any) -> int | None:
    """The model's maximum sequence length, when its config declares one."""
    if hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    for attr in _CONTEXT_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def eos_token_ids(lm: nn.Module, tokenizer: Any) -> list[int]:
    """The tokenizer's EOS plus any EOS the model's generation config declares (chat models
    often end turns with a second one)."""
    ids: list[int] = []
    candidates = [tokenizer.eos_token_id]
    gen_eos = getattr(getattr(lm, "generation_config", None), "eos_token_id", None)
    candidates += list(gen_eos) if isinstance(gen_eos, (list, tuple)) else [gen_eos]
    for i in candidates:
        if i is not None and int(i) not in ids:
            ids.append(int(i))
    return ids


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Training-time format: special prefix (e.g. BOS) + prompt tokens without special tokens."""
    prefix = special_prefix(tokenizer)
    if not prompts:
        return []
    ids = tokenizer(list(prompts), add_special_tokens=False, verbose=False)["input_ids"]
    return [prefix + list(p) for p in ids]


def batch_seed(seed: int, batch_index: int, row: int = 0) -> int:
    """The seed of one generate call: batch ``batch_index``, or (row > 0) a row run alone."""
    return (seed * 1_000_003 + batch_index * 7919 + row * 104_729 + 17) % (2**63 - 1)


class _StopCriteria:
    """Per-row stopping for HF generate: a stop sequence in the decoded tail of the row's new
    tokens, or the row reaching its token limit. Records, per row,
    how many new tokens it had when it stopped, so the padding after it can be dropped."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], start: int, row_limits: list[int]):
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.start = start
        self.row_limits = row_limits
        # Each token decodes to at least one byte, so a stop sequence that just appeared lies in
        # the last len(bytes) tokens; a few more absorb tokens cut mid-character.
        self.window = max((len(s.encode("utf-8")) for s in self.stops), default=0) + 4
        self.stopped_at: list[int | None] = [None] * len(row_limits)

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.start:]
        n = new.shape[1]
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        tails = None
        if self.stops and n > 0:
            rows = new[:, max(0, n - self.window):].tolist()
            tails = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        for i in range(input_ids.shape[0]):
            hit = n >= self.row_limits[i] or (tails is not None and any(s in tails[i] for s in self.stops))
            if hit:
                done[i] = True
                if self.stopped_at[i] is None:
                    self.stopped_at[i] = n
        return done


def _stopping_list(criteria: _StopCriteria):
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Adapter(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return criteria(input_ids, scores, **kwargs)

    return StoppingCriteriaList([_Adapter()])


def decode_new(tokenizer: Any, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The text the new tokens add after the prompt. Decoding them in the prompt's context keeps
    what SentencePiece-style tokenizers drop at the start of a standalone decode (a leading space)."""
    full = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    base = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    if full.startswith(base):
        return full[len(base):]
    return tokenizer.decode(new_ids, skip_special_tokens=True)


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def generate(model: nn.Module, tokenizer: Any, prompts: list[str], cfg: GenerationConfig | None = None) -> list[str]:
    """Completions of ``prompts`` (new text only, stop sequences cut), in order."""
    cfg = cfg or GenerationConfig()
    lm = causal_lm(model)
    encoded = encode_prompts(tokenizer, prompts)
    ctx = context_length(lm.config)
    for i, ids in enumerate(encoded):
        if not ids:
            raise WMTPError(f"prompt {i} is empty and the tokenizer adds no prefix token: nothing to condition on")
        if ctx is not None and len(ids) >= ctx:
            raise WMTPError(
                f"prompt {i} is {len(ids)} tokens long (special prefix included) but the model's context is "
                f"{ctx} tokens, which leaves no room to generate; shorten the prompt"
            )
    eos = eos_token_ids(lm, tokenizer)
    pad = pad_token_id(tokenizer)
    device = next(lm.parameters()).device
    was_training = lm.training
    lm.eval()
    outputs: list[str] = []
    try:
        for b, first in enumerate(range(0, len(encoded), cfg.batch_size)):
            rows = encoded[first:first + cfg.batch_size]
            limits = [cfg.max_new_tokens if ctx is None else min(cfg.max_new_tokens, ctx - len(r)) for r in rows]
            # A row whose context ends before max_new_tokens runs alone: in a batch, a finished
            # row keeps being fed (padding) until every row is done, and its positions would run
            # past the context (an index error for learned position embeddings).
            full = [i for i, n in enumerate(limits) if n == cfg.max_new_tokens]
            groups = ([full] if full else []) + [[i] for i, n in enumerate(limits) if n < cfg.max_new_tokens]
            texts: dict[int, str] = {}
            for g, group in enumerate(groups):
                seed = batch_seed(cfg.seed, b) if g == 0 and full else batch_seed(cfg.seed, b, group[0] + 1)
                new = _generate_rows(lm, tokenizer, [rows[i] for i in group], limits[group[0]], cfg, seed,
                                     eos, pad, device)
                texts.update(zip(group, new))
            outputs.extend(texts[i] for i in range(len(rows)))
    finally:
        lm.train(was_training)
    return outputs


def _generate_rows(lm: nn.Module, tokenizer: Any, rows: list[list[int]], max_new_tokens: int,
                   cfg: GenerationConfig, seed: int, eos: list[int], pad: int, device: torch.device) -> list[str]:
    from transformers import GenerationConfig as HFGenerationConfig

    sample = cfg.temperature > 0
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):  # left padding: every row's last prompt token is at width-1
        input_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        attention_mask[i, width - len(r):] = 1
    criteria = _StopCriteria(tokenizer, cfg.stop, width, [max_new_tokens] * len(rows))
    # Every knob set explicitly: fields left None would be filled from the checkpoint's
    # generation_config.json (top_k=50, repetition penalties, sampling defaults).
    gen_cfg = HFGenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=cfg.temperature if sample else 1.0,
        top_p=cfg.top_p if sample else 1.0,
        top_k=0 if sample else 50,  # 0 disables top-k; 50 (the default) keeps greedy free of warnings
        num_beams=1,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        min_length=0,
        eos_token_id=eos,
        pad_token_id=pad,
        use_cache=True,
    )
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        out = lm.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=gen_cfg,
            stopping_criteria=_stopping_list(criteria),
        )
    out = out[:, width:].tolist()
    texts = []
    for i, r in enumerate(rows):
        new = out[i]
        if criteria.stopped_at[i] is not None:
            new = new[: criteria.stopped_at[i]]
        end = next((j for j, t in enumerate(new) if t in eos), len(new))
        texts.append(cut_at_stop(decode_new(tokenizer, r, new[:end]), cfg.stop))
    return texts
