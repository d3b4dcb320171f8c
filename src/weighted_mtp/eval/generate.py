"""Batched text generation for evaluation: any HF causal LM, or an MTPModel through head 1.

Prompts are encoded the way training encodes them (text tokenized with
``add_special_tokens=False`` after ``special_prefix(tokenizer)``), left-padded by hand (the
tokenizer's own padding side is never touched) and decoded with the model's KV cache by a loop
of our own rather than HF ``generate``, for throughput (``benchmarks/generation.py``):

* Continuous batching: up to ``batch_size`` prompts decode together; a row leaves the batch
  the step it finishes (EOS, a stop sequence, its token limit), its cache rows dropped, and the
  next waiting prompt takes its place (its prompt pass run alone, its cache left-padded into the
  batch's). HF ``generate`` feeds a finished row padding until the slowest row of its batch is
  done, so a batch costs as many steps as its longest completion.
* Prompts are taken in order of length, so rows that join together carry little padding, and
  cache columns that are padding for every remaining row are dropped. Answers come back in the
  caller's order.
* The prompt pass computes logits for the last position only.

Joining a running batch needs a cache of plain ``DynamicLayer``s (full attention: Llama, Qwen2,
GPT-2, ...); other caches (sliding windows) fall back to one batch at a time, finished rows
still leaving it.

A row stops at EOS (the tokenizer's and any in the model's generation config), at a stop
sequence (checked on the decoded tail of the row's new tokens; the stop sequence and
everything after it is cut from the returned text) or at ``max_new_tokens``, or earlier where
the model's context ends. Only the new text is returned.

Sampling (temperature, top-p as in HF's ``TopPLogitsWarper``) is reproducible and independent
of batching: prompt ``i`` of a call samples from its own generator seeded by ``(cfg.seed, i)``,
so its completion does not depend on the batch size, on the other prompts, or on the caller's
global RNG (which is left alone). Greedy rows are the argmax of each step's logits. (Padding
changes float rounding slightly, so a near-tie can in principle resolve differently in another
batch; the tests check batched against unbatched and against HF ``generate``.)
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from tqdm import tqdm

from weighted_mtp.data.collate import pad_token_id, special_prefix
from weighted_mtp.errors import WMTPError
from weighted_mtp.models.mtp import MTPModel

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


@dataclass
class Generation:
    """What one `generate_completions` call produced, with the numbers a throughput claim needs."""

    texts: list[str]         # new text per prompt, stop sequence cut, in the caller's order
    new_tokens: list[int]    # tokens the model produced per prompt (the EOS or stop token included)
    seconds: float           # wall time of the whole call (encoding, every forward, decoding)
    forward_passes: int      # model calls (one prompt pass per batch, then one per step)

    @property
    def tokens_per_s(self) -> float:
        return sum(self.new_tokens) / max(self.seconds, 1e-9)


def causal_lm(model: nn.Module) -> nn.Module:
    """The HF causal LM to decode with: an MTPModel's head 1 (`.lm`), or the model itself."""
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


def row_seed(seed: int, index: int) -> int:
    """The sampling seed of prompt ``index`` of a call made with ``seed``."""
    return (seed * 1_000_003 + index * 7919 + 17) % (2**63 - 1)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering exactly as HF's ``TopPLogitsWarper`` (min_tokens_to_keep=1): the
    smallest-probability tokens whose cumulative probability stays <= 1 - top_p get -inf."""
    if top_p >= 1.0:
        return logits
    sorted_logits, sorted_idx = torch.sort(logits, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - top_p)
    remove[..., -1:] = False
    remove = remove.scatter(-1, sorted_idx, remove)
    return logits.masked_fill(remove, float("-inf"))


def next_tokens(logits: torch.Tensor, cfg: GenerationConfig, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """[rows, vocab] logits -> [rows] tokens: argmax, or one draw per row from its own generator."""
    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    probs = top_p_filter(logits.float() / cfg.temperature, cfg.top_p).softmax(dim=-1)
    return torch.cat([torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(generators)])


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


class _Forward:
    """One cached forward of an HF causal LM, whatever its keyword names (``cache`` in newer
    transformers, ``past_key_values`` before) and whether it can skip the logits of all but
    the last position (``logits_to_keep``)."""

    def __init__(self, lm: nn.Module):
        from transformers import DynamicCache

        self.lm = lm
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm  # a peft wrapper passes kwargs on
        params = inspect.signature(base.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.positions = "position_ids" in params
        self.last_only = "logits_to_keep" in params
        self.new_cache = lambda: DynamicCache(config=lm.config)
        self.calls = 0

    def __call__(self, input_ids, attention_mask, position_ids, cache) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, self.cache_kw: cache, "use_cache": True}
        if self.positions:
            kwargs["position_ids"] = position_ids
        if self.last_only:
            kwargs["logits_to_keep"] = 1
        self.calls += 1
        return self.lm(**kwargs).logits[:, -1, :]


def generate_completions(model: nn.Module, tokenizer: Any, prompts: Sequence[str],
                         cfg: GenerationConfig | None = None, *, progress: bool = False) -> Generation:
    """Completions of ``prompts`` with token counts and wall time (see the module docstring).
    `progress`: a bar of finished prompts on stderr (when it is a terminal)."""
    start = time.perf_counter()
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
    limits = [cfg.max_new_tokens if ctx is None else min(cfg.max_new_tokens, ctx - len(r)) for r in encoded]
    decoder = _Decoder(lm, tokenizer, cfg, encoded, limits)
    was_training = lm.training
    lm.eval()
    bar = tqdm(total=len(encoded), desc="generating", unit="prompt", disable=None if progress else True,
               dynamic_ncols=True)
    decoder.on_finish = bar.update
    try:
        with torch.inference_mode():
            new = decoder.run()
    finally:
        bar.close()
        lm.train(was_training)
    texts = []
    for prompt_ids, ids in zip(encoded, new):
        end = next((j for j, t in enumerate(ids) if t in decoder.eos), len(ids))
        texts.append(cut_at_stop(decode_new(tokenizer, prompt_ids, ids[:end]), cfg.stop))
    return Generation(texts=texts, new_tokens=[len(ids) for ids in new], seconds=time.perf_counter() - start,
                      forward_passes=decoder.forward.calls)


def generate(model: nn.Module, tokenizer: Any, prompts: list[str], cfg: GenerationConfig | None = None) -> list[str]:
    """Completions of ``prompts`` (new text only, stop sequences cut), in order."""
    return generate_completions(model, tokenizer, prompts, cfg).texts


def _left_pad(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim=dim)


@dataclass
class _Batch:
    """The running rows: prompt indices, their KV cache, 2-D attention mask [rows, columns],
    the position of each row's last token and the token each row feeds next."""

    rows: list[int]
    cache: Any
    mask: torch.Tensor
    last: torch.Tensor
    tokens: torch.Tensor

    def select(self, keep: list[int]) -> None:
        sel = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(sel)
        self.rows = [self.rows[j] for j in keep]
        self.mask, self.last, self.tokens = self.mask[sel], self.last[sel], self.tokens[sel]

    def trim(self) -> None:
        """Drop the leading cache columns that are padding for every row."""
        first = int(self.mask.any(dim=0).long().argmax())
        if first > 0:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]
            self.mask = self.mask[:, first:]

    def absorb(self, other: "_Batch") -> None:
        """Append `other`'s rows, left-padding the shorter cache (and mask) with masked columns."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        pad_a, pad_b = width - self.mask.shape[1], width - other.mask.shape[1]
        for a, b in zip(self.cache.layers, other.cache.layers):
            a.keys = torch.cat([_left_pad(a.keys, pad_a, -2), _left_pad(b.keys, pad_b, -2)])
            a.values = torch.cat([_left_pad(a.values, pad_a, -2), _left_pad(b.values, pad_b, -2)])
        self.mask = torch.cat([_left_pad(self.mask, pad_a, 1), _left_pad(other.mask, pad_b, 1)])
        self.rows += other.rows
        self.last = torch.cat([self.last, other.last])
        self.tokens = torch.cat([self.tokens, other.tokens])


def _joinable(cache: Any) -> bool:
    """Rows can join a running batch when every cache layer is a plain full-attention DynamicLayer."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer and getattr(layer, "keys", None) is not None
                                for layer in layers)


class _Decoder:
    """Continuous batching over all prompts of one call (see the module docstring)."""

    def __init__(self, lm: nn.Module, tokenizer: Any, cfg: GenerationConfig, encoded: list[list[int]],
                 limits: list[int]):
        self.lm, self.tokenizer, self.cfg = lm, tokenizer, cfg
        self.encoded, self.limits = encoded, limits
        self.forward = _Forward(lm)
        self.eos = set(eos_token_ids(lm, tokenizer))
        self.pad = pad_token_id(tokenizer)
        self.device = next(lm.parameters()).device
        # Each token decodes to at least one byte, so a stop sequence that just appeared lies in
        # the last len(bytes) tokens; a few more absorb tokens cut mid-character.
        self.window = max((len(s.encode("utf-8")) for s in cfg.stop), default=0) + 4
        self.generators: list[torch.Generator | None] = [None] * len(encoded)
        self.new: list[list[int]] = [[] for _ in encoded]
        self.on_finish = lambda n: None  # called with the number of prompts that just finished

    def _stopped(self, i: int) -> bool:
        ids = self.new[i]
        if ids[-1] in self.eos or len(ids) >= self.limits[i]:
            return True
        if not self.cfg.stop:
            return False
        tail = self.tokenizer.decode(ids[-self.window:], skip_special_tokens=True)
        return any(s in tail for s in self.cfg.stop)

    def _choose(self, logits: torch.Tensor, batch: _Batch) -> list[int]:
        """Pick each row's next token, record it, and return the batch rows still running."""
        gens = [self.generators[i] for i in batch.rows] if self.cfg.temperature > 0 else ()
        batch.tokens = next_tokens(logits, self.cfg, gens)
        keep = []
        for j, (i, t) in enumerate(zip(batch.rows, batch.tokens.tolist())):
            self.new[i].append(t)
            if not self._stopped(i):
                keep.append(j)
        if len(keep) < len(batch.rows):
            self.on_finish(len(batch.rows) - len(keep))
        return keep

    def _prefill(self, rows: list[int]) -> _Batch:
        width = max(len(self.encoded[i]) for i in rows)
        input_ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, i in enumerate(rows):  # left padding: every row's last prompt token is at width-1
            r = self.encoded[i]
            input_ids[j, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[j, width - len(r):] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as HF generate numbers them
        if self.cfg.temperature > 0:
            for i in rows:
                self.generators[i] = torch.Generator(device=self.device).manual_seed(row_seed(self.cfg.seed, i))
        cache = self.forward.new_cache()
        logits = self.forward(input_ids, mask, positions, cache)
        batch = _Batch(rows=list(rows), cache=cache, mask=mask, last=positions[:, -1], tokens=input_ids[:, -1])
        keep = self._choose(logits, batch)
        if len(keep) < len(rows):
            batch.select(keep)
        return batch

    def run(self) -> list[list[int]]:
        """New token ids per prompt (the stopping token included)."""
        size = self.cfg.batch_size
        queue = sorted(range(len(self.encoded)), key=lambda i: len(self.encoded[i]))  # stable
        batch: _Batch | None = None
        joinable = True
        while queue or (batch is not None and batch.rows):
            free = size - (len(batch.rows) if batch is not None else 0)
            if queue and free > 0 and (batch is None or not batch.rows or joinable):
                group, queue = queue[:free], queue[free:]
                joined = self._prefill(group)
                joinable = joinable and _joinable(joined.cache)
                if batch is None or not batch.rows:
                    batch = joined
                elif joined.rows:
                    batch.absorb(joined)
                continue
            batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=1)
            batch.last = batch.last + 1
            logits = self.forward(batch.tokens[:, None], batch.mask, batch.last[:, None], batch.cache)
            keep = self._choose(logits, batch)
            if len(keep) < len(batch.rows):  # finished rows leave the batch and its cache
                batch.select(keep)
                if joinable and batch.rows:
                    batch.trim()
        return self.new
